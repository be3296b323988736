//! Sign-in attempts per client address, beside each account's lockout: an
//! address that tries many names is slowed down before it can lock them
//! all out or guess a one-time code.

use std::net::IpAddr;
use std::num::NonZeroU32;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// Sign-in and enrolment attempts one client address (an IPv6 /64) may make per minute.
pub const SIGN_INS_PER_ADDRESS_PER_MINUTE: u32 = 20;
/// Addresses remembered before the idle ones are forgotten.
pub const SIGN_IN_ADDRESSES_MAX: usize = 10_000;

/// The per-address allowance of sign-in and enrolment attempts.
pub struct SignInThrottle {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
}

impl Default for SignInThrottle {
    fn default() -> Self {
        let rate = NonZeroU32::new(SIGN_INS_PER_ADDRESS_PER_MINUTE).unwrap_or(NonZeroU32::MIN);
        SignInThrottle { limiter: RateLimiter::keyed(Quota::per_minute(rate)) }
    }
}

impl SignInThrottle {
    /// Takes one attempt from `address`'s allowance; false if it has none
    /// left. Requests whose address is unknown share one allowance.
    pub fn allow(&self, address: Option<IpAddr>) -> bool {
        if self.limiter.len() >= SIGN_IN_ADDRESSES_MAX {
            self.limiter.retain_recent();
            self.limiter.shrink_to_fit();
        }
        let address = address.map_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), client_key);
        self.limiter.check_key(&address).is_ok()
    }
}

/// The allowance an address draws on: an IPv4 address (mapped ones too) on
/// its own, an IPv6 address by its /64, which one client usually holds whole.
fn client_key(address: IpAddr) -> IpAddr {
    match address.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(std::net::Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_gets_its_allowance_and_no_more_while_others_keep_theirs() {
        let throttle = SignInThrottle::default();
        let (one, other): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        for attempt in 0..SIGN_INS_PER_ADDRESS_PER_MINUTE {
            assert!(throttle.allow(Some(one)), "attempt {attempt}");
        }
        assert!(!throttle.allow(Some(one)));
        assert!(throttle.allow(Some(other)));
        assert!(throttle.allow(None));
    }

    #[test]
    fn an_ipv6_network_shares_one_allowance() {
        let throttle = SignInThrottle::default();
        for host in 0..SIGN_INS_PER_ADDRESS_PER_MINUTE {
            let address: IpAddr = format!("2001:db8:1:2::{host:x}").parse().unwrap();
            assert!(throttle.allow(Some(address)), "host {host}");
        }
        assert!(!throttle.allow(Some("2001:db8:1:2:ffff::1".parse().unwrap())), "the same /64");
        assert!(throttle.allow(Some("2001:db8:1:3::1".parse().unwrap())), "another /64");
        assert_eq!(client_key("::ffff:10.0.0.1".parse().unwrap()), "10.0.0.1".parse::<IpAddr>().unwrap());
    }
}
