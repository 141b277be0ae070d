//! Stateful firewall.
