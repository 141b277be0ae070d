//! Admission: what a stranger must show before the node does work for it. The CA pool and
//! blocklist, verified certificates cached by key and wire bytes, initiations held until the
//! Hello with their certificate arrives, and the per-second budgets (verifications, Hello and
//! `UnknownIndex` and cookie replies, refusals logged, boringtun's handshake limiter).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::x25519::PublicKey;

use super::budget::{self, Budget, SourceBudget};
use super::event::{CertRefusal, CertSource};
use super::identity::Identity;
use super::peer::Path;
use crate::cert::pool::{Blocklist, CaPool, VerifiedCert, VerifyError};
use crate::cert::{Certificate, Fingerprint};
use crate::unixtime::UnixTime;

/// Verified certificates remembered from Hellos, awaiting the handshake that proves the key.
const KNOWN_CERTS: usize = 4096;
/// Initiations held at once for a Hello still on its way, and for how long.
const HELD_INITS: usize = 1024;
const HELD_INIT_FOR: Duration = Duration::from_secs(5);
/// Handshake initiations per second the node answers without demanding a cookie (boringtun's
/// device uses the same figure).
const HANDSHAKES_PER_SEC: u64 = 100;

/// Why a certificate was not admitted.
#[derive(Debug)]
pub(super) enum NotAdmitted {
    /// Its source used up its verifications for this second (not looked at).
    OverBudget,
    Refused(CertRefusal),
}

/// A certificate a stranger offers: where it came from, its wire bytes, and whether checking
/// it is charged to the source's budget (not for certificates an authenticated lighthouse sent).
#[derive(Debug, Clone, Copy)]
pub(super) struct CertOffer<'a> {
    pub source: CertSource,
    pub bytes: &'a [u8],
    pub budgeted: bool,
}

pub(super) struct Admission {
    pool: CaPool,
    blocklist: Blocklist,
    /// Checks mac1 (and mac2 under load) of initiations before any Diffie-Hellman work.
    /// Shared with every peer's `Tunn`, so cookies come from one secret whichever answers.
    pub limiter: Arc<RateLimiter>,
    known_certs: HashMap<[u8; 32], (VerifiedCert, Instant)>,
    known_by_fingerprint: HashMap<Fingerprint, [u8; 32]>,
    /// Refused certificates still to be reported this second.
    refusals_to_log: Budget,
    held_inits: HashMap<Path, (Vec<u8>, Instant)>,
    /// Certificate verifications left this second, per source and in all.
    verify_budget: SourceBudget,
    /// Hello replies left this second, per source and in all.
    hello_reply_budget: SourceBudget,
    unknown_index_budget: SourceBudget,
    cookie_reply_budget: SourceBudget,
}

impl Admission {
    pub fn new(pool: CaPool, blocklist: Blocklist, public: &PublicKey) -> Self {
        Admission {
            pool,
            blocklist,
            limiter: Arc::new(RateLimiter::new(public, HANDSHAKES_PER_SEC)),
            known_certs: HashMap::new(),
            known_by_fingerprint: HashMap::new(),
            refusals_to_log: Budget::per_sec(budget::REFUSALS_LOGGED_PER_SEC),
            held_inits: HashMap::new(),
            verify_budget: SourceBudget::new(budget::VERIFY_PER_SOURCE_PER_SEC, budget::VERIFY_PER_SEC),
            hello_reply_budget: SourceBudget::new(
                budget::HELLO_REPLIES_PER_SOURCE_PER_SEC,
                budget::HELLO_REPLIES_PER_SEC,
            ),
            unknown_index_budget: SourceBudget::new(
                budget::UNKNOWN_INDEX_REPLIES_PER_SOURCE_PER_SEC,
                budget::UNKNOWN_INDEX_REPLIES_PER_SEC,
            ),
            cookie_reply_budget: SourceBudget::new(budget::COOKIE_REPLIES_PER_SOURCE_PER_SEC, u32::MAX),
        }
    }

    /// A new CA pool and blocklist (reload): what was verified under the old ones is forgotten.
    pub fn replace_trust(&mut self, pool: CaPool, blocklist: Blocklist) {
        self.pool = pool;
        self.blocklist = blocklist;
        self.known_certs.clear();
        self.known_by_fingerprint.clear();
    }

    /// Whether a peer's certificate still verifies (expiry, blocklist, CA).
    pub fn recheck(&self, v: &VerifiedCert, wall: UnixTime) -> Result<(), VerifyError> {
        self.pool.recheck(v, wall, &self.blocklist)
    }

    /// Parses and verifies a peer certificate from the wire, charged to `source`'s budget when
    /// `budgeted` (certificates an authenticated lighthouse sent are not). A certificate
    /// already verified (same bytes) costs no signature check; one that claims our identity
    /// or has no overlay IP is refused.
    pub fn verify(
        &mut self,
        now: Instant,
        wall: UnixTime,
        offer: CertOffer<'_>,
        us: &Identity,
    ) -> Result<VerifiedCert, NotAdmitted> {
        let CertOffer { source, bytes: cert, budgeted } = offer;
        // Indexed by a hash of the wire bytes: that is the fingerprint of a v1 certificate but
        // not of a v2 one (Nebula hashes v2's parts), so entries are matched on their bytes.
        let fp = Fingerprint::of(cert);
        if let Some(key) = self.known_by_fingerprint.get(&fp)
            && let Some((v, _)) = self.known_certs.get(key)
            && v.cert().to_bytes() == cert
            && self.pool.recheck(v, wall, &self.blocklist).is_ok()
        {
            return Ok(v.clone());
        }
        if budgeted && !self.verify_budget.take(budget_key(source)) {
            return Err(NotAdmitted::OverBudget);
        }
        let v = Certificate::from_bytes(cert)
            .map_err(|e| CertRefusal::Malformed(e.to_string()))
            .and_then(|c| self.pool.verify_arc(Arc::new(c), wall, &self.blocklist).map_err(CertRefusal::Invalid))
            .and_then(|v| {
                let name = v.cert().name().to_string();
                if us.claimed_by(v.cert()) {
                    Err(CertRefusal::ClaimsOurIdentity { name })
                } else if v.cert().identity().is_none() {
                    Err(CertRefusal::NoOverlayIp { name })
                } else {
                    Ok(v)
                }
            })
            .map_err(NotAdmitted::Refused)?;
        self.remember(now, fp, &v);
        Ok(v)
    }

    /// Caches a verified certificate by its key and by `fp` (of its wire bytes), evicting the
    /// oldest entry when full.
    fn remember(&mut self, now: Instant, fp: Fingerprint, v: &VerifiedCert) {
        if self.known_certs.len() >= KNOWN_CERTS {
            let oldest = self.known_certs.iter().min_by_key(|(_, (_, t))| *t).map(|(k, _)| *k);
            if let Some(k) = oldest
                && let Some((old, _)) = self.known_certs.remove(&k)
            {
                self.known_by_fingerprint.remove(&Fingerprint::of(old.cert().to_bytes()));
            }
        }
        let key = v.cert().details().public_key;
        if let Some((old, _)) = self.known_certs.insert(key, (v.clone(), now)) {
            self.known_by_fingerprint.remove(&Fingerprint::of(old.cert().to_bytes()));
        }
        self.known_by_fingerprint.insert(fp, key);
    }

    /// The verified certificate for WireGuard key `key`, from a Hello seen earlier.
    pub fn known(&self, key: &[u8; 32]) -> Option<&VerifiedCert> {
        self.known_certs.get(key).map(|(v, _)| v)
    }

    /// Whether one more refused certificate may be reported this second.
    pub fn log_refusal(&mut self) -> bool {
        self.refusals_to_log.take()
    }

    /// Spends a Hello reply toward `source`.
    pub fn take_hello_reply(&mut self, source: CertSource) -> bool {
        self.hello_reply_budget.take(budget_key(source))
    }

    /// Spends an `UnknownIndex` reply toward `ip`.
    pub fn take_unknown_index_reply(&mut self, ip: IpAddr) -> bool {
        self.unknown_index_budget.take(ip)
    }

    /// Spends a cookie reply toward `ip`.
    pub fn take_cookie_reply(&mut self, ip: IpAddr) -> bool {
        self.cookie_reply_budget.take(ip)
    }

    /// Holds an initiation whose key we have no certificate for: its Hello may be on its way.
    pub fn hold_init(&mut self, now: Instant, from: Path, init: &[u8]) {
        if self.held_inits.len() < HELD_INITS {
            self.held_inits.insert(from, (init.to_vec(), now));
        }
    }

    /// The initiation held for `from`, if any.
    pub fn release_init(&mut self, from: Path) -> Option<Vec<u8>> {
        self.held_inits.remove(&from).map(|(init, _)| init)
    }

    /// The once-a-second work: budgets refilled, stale held initiations dropped.
    pub fn each_second(&mut self, now: Instant) {
        self.verify_budget.refill();
        self.hello_reply_budget.refill();
        self.refusals_to_log.refill();
        self.limiter.reset_count();
        self.unknown_index_budget.refill();
        self.cookie_reply_budget.refill();
        self.held_inits.retain(|_, (_, t)| now.duration_since(*t) < HELD_INIT_FOR);
    }
}

/// The address a per-source budget charges: the sender, or the relay or lighthouse a message
/// came through.
fn budget_key(source: CertSource) -> IpAddr {
    match source {
        CertSource::Direct(a) => a.ip(),
        CertSource::Relay { relay, .. } => relay,
        CertSource::Lighthouse { lighthouse, .. } => lighthouse,
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::{Duration, Instant};

    use super::{Admission, CertOffer, HELD_INIT_FOR, NotAdmitted};
    use crate::cert::Certificate;
    use crate::cert::keys::HostSecret;
    use crate::cert::pool::{Blocklist, VerifyError};
    use crate::mesh::budget::VERIFY_PER_SOURCE_PER_SEC;
    use crate::mesh::event::{CertRefusal, CertSource};
    use crate::mesh::identity::Identity;
    use crate::mesh::peer::Path;
    use crate::mesh::test_support::{TestCa, VALID_AT, ip};

    struct World {
        ca: TestCa,
        us: Identity,
        our_key: HostSecret,
        admission: Admission,
    }

    fn world() -> World {
        let ca = TestCa::new();
        let key = HostSecret::generate();
        let us = Identity::new(ca.host("us", "100.64.0.1/10", &key), &key, vec![]).expect("identity");
        let admission = Admission::new(ca.pool(), Blocklist::default(), &us.public);
        World { ca, us, our_key: key, admission }
    }

    fn hosts(ca: &TestCa, n: u8) -> Vec<Certificate> {
        (0..n).map(|i| ca.host(&format!("h{i}"), &format!("100.64.1.{i}/10"), &HostSecret::generate())).collect()
    }

    fn from(addr: &str) -> CertSource {
        CertSource::Direct(addr.parse::<SocketAddr>().expect("addr"))
    }

    fn offer(source: CertSource, cert: &Certificate) -> CertOffer<'_> {
        CertOffer { source, bytes: cert.to_bytes(), budgeted: true }
    }

    #[test]
    fn a_source_pays_for_new_certificates_only_and_its_budget_refills_each_second() {
        let World { ca, us, mut admission, .. } = world();
        let now = Instant::now();
        let certs = hosts(&ca, VERIFY_PER_SOURCE_PER_SEC as u8 + 3);
        let (spent, extra) = certs.split_at(VERIFY_PER_SOURCE_PER_SEC as usize);
        let stranger = from("198.18.0.9:4242");
        for c in spent {
            assert!(admission.verify(now, VALID_AT, offer(stranger, c), &us).is_ok());
        }
        assert!(matches!(
            admission.verify(now, VALID_AT, offer(stranger, &extra[0]), &us),
            Err(NotAdmitted::OverBudget)
        ));
        // A certificate already verified (the same bytes) costs no check and no budget.
        assert!(admission.verify(now, VALID_AT, offer(stranger, &spent[0]), &us).is_ok());
        assert!(admission.known(&spent[0].details().public_key).is_some());
        // Another source has its own budget.
        assert!(admission.verify(now, VALID_AT, offer(from("198.18.0.10:4242"), &extra[0]), &us).is_ok());
        // What an authenticated lighthouse sends is not charged, even to an address whose
        // budget is spent.
        let lighthouse = CertSource::Lighthouse { lighthouse: ip("198.18.0.9"), about: None };
        let unbudgeted = CertOffer { source: lighthouse, bytes: extra[1].to_bytes(), budgeted: false };
        assert!(admission.verify(now, VALID_AT, unbudgeted, &us).is_ok());
        assert!(matches!(
            admission.verify(now, VALID_AT, offer(stranger, &extra[2]), &us),
            Err(NotAdmitted::OverBudget)
        ));
        admission.each_second(now + Duration::from_secs(1));
        assert!(admission.verify(now, VALID_AT, offer(stranger, &extra[2]), &us).is_ok(), "refilled");
    }

    #[test]
    fn refuses_garbage_copies_of_us_and_what_a_reload_blocklists() {
        let World { ca, us, our_key, mut admission } = world();
        let now = Instant::now();
        let src = from("198.18.0.9:4242");
        let junk = CertOffer { source: src, bytes: b"not a certificate", budgeted: true };
        assert!(matches!(
            admission.verify(now, VALID_AT, junk, &us),
            Err(NotAdmitted::Refused(CertRefusal::Malformed(_)))
        ));
        // Our key under another address is a copy of our identity, not a peer.
        let copy = ca.host("copy", "100.64.0.77/10", &our_key);
        let refused = admission.verify(now, VALID_AT, offer(src, &copy), &us);
        assert!(matches!(refused, Err(NotAdmitted::Refused(CertRefusal::ClaimsOurIdentity { .. }))), "{refused:?}");
        // Expired: refused even though the CA signed it.
        let peer = ca.host("peer", "100.64.0.2/10", &HostSecret::generate());
        let late = admission.verify(now, crate::unixtime::UnixTime(9_500), offer(src, &peer), &us);
        assert!(
            matches!(late, Err(NotAdmitted::Refused(CertRefusal::Invalid(VerifyError::Expired { .. })))),
            "{late:?}"
        );
        // Verified and cached, then blocklisted by a reload: the cache does not keep it alive.
        assert!(admission.verify(now, VALID_AT, offer(src, &peer), &us).is_ok());
        let blocklist = Blocklist::from_hex(&[peer.fingerprint().to_string()]).expect("blocklist");
        admission.replace_trust(ca.pool(), blocklist);
        assert!(admission.known(&peer.details().public_key).is_none(), "forgotten on reload");
        let blocked = admission.verify(now, VALID_AT, offer(src, &peer), &us);
        assert!(matches!(blocked, Err(NotAdmitted::Refused(CertRefusal::Invalid(VerifyError::Blocklisted { .. })))));
    }

    #[test]
    fn held_initiations_wait_a_few_seconds_for_their_hello() {
        let World { mut admission, .. } = world();
        let now = Instant::now();
        let (a, b) = (
            Path::Direct("198.18.0.9:4242".parse().expect("addr")),
            Path::Direct("198.18.0.10:4242".parse().expect("addr")),
        );
        admission.hold_init(now, a, b"init-a");
        admission.hold_init(now, b, b"init-b");
        assert_eq!(admission.release_init(a).as_deref(), Some(&b"init-a"[..]));
        assert_eq!(admission.release_init(a), None, "released once");
        admission.each_second(now + HELD_INIT_FOR - Duration::from_millis(1));
        admission.hold_init(now, a, b"init-a");
        assert_eq!(admission.release_init(a).as_deref(), Some(&b"init-a"[..]), "kept until then");
        admission.each_second(now + HELD_INIT_FOR);
        assert_eq!(admission.release_init(b), None, "dropped after {HELD_INIT_FOR:?}");
    }
}
