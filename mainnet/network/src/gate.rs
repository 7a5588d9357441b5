//! Which incoming handshakes the listener serves.
//!
//! A QUIC handshake costs the listener a key exchange and a signature before it learns
//! whether the dialer holds a validator's key, so anyone who can reach the port could keep it
//! busy with handshakes. The gate bounds that work:
//!
//! - **Address validation first.** An Initial from an address that has not proven it can
//!   receive there gets a stateless Retry (no state kept, no crypto beyond a token). Only a
//!   dialer that really holds its source address reaches the buckets below, so nobody can
//!   spend an honest validator's share by forging its address.
//! - **Validators' addresses.** A handshake from a committee member's address (a validator
//!   dials from the socket it listens on) draws from that member's own bucket; strangers
//!   cannot drain it, and at most [`HandshakeLimits::peer_burst`] of its handshakes run at
//!   once (since stop 49; before, only their rate was bounded).
//! - **Strangers.** Every other address draws from its IP's bucket and from one bucket all
//!   strangers share, and at most [`HandshakeLimits::stranger_in_flight`] of their
//!   handshakes run at once. (A validator behind a NAT that rewrites ports is a stranger
//!   here: it still connects, within those limits.)
//!
//! - **Retry tokens are used once.** A token proves its dialer received the Retry, but
//!   quinn takes it again for as long as it lives: someone who sees a validator's packets
//!   and can send from its address could replay it and spend the validator's share.
//!   [`RetriesSeen`] remembers the connection ids the tokens were given for while they live,
//!   and a second use is refused (since stop 49).
//!
//! A handshake the gate turns down is refused at once (a CONNECTION_REFUSED close, no
//! crypto), and the dialer's backoff retries it later. Buckets are counted in thousandths of
//! a handshake so that refills need no floating point.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// How many handshakes the listener serves, and from whom (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HandshakeLimits {
    /// Handshakes a validator's address may start at once, in a burst.
    pub peer_burst: u32,
    /// Handshakes a second a validator's address gets back, after a burst.
    pub peer_per_sec: u32,
    /// Handshakes one stranger IP may start in a burst.
    pub ip_burst: u32,
    /// Handshakes a second one stranger IP gets back.
    pub ip_per_sec: u32,
    /// Handshakes all strangers together may start in a burst.
    pub strangers_burst: u32,
    /// Handshakes a second all strangers together get back.
    pub strangers_per_sec: u32,
    /// Strangers' handshakes under way at once.
    pub stranger_in_flight: usize,
}

impl Default for HandshakeLimits {
    /// A validator reconnects with a backoff from 50 ms, so 8 at once and 4 a second leave
    /// it room; strangers get 4 per IP (then 1 a second), 32 in all (then 16 a second) and
    /// 16 under way.
    fn default() -> Self {
        HandshakeLimits {
            peer_burst: 8,
            peer_per_sec: 4,
            ip_burst: 4,
            ip_per_sec: 1,
            strangers_burst: 32,
            strangers_per_sec: 16,
            stranger_in_flight: 16,
        }
    }
}

/// Stranger IPs whose buckets are remembered; past this, full buckets are forgotten first and
/// then new IPs use only the shared bucket.
const TRACKED_IPS: usize = 4096;

const MILLI: u64 = 1000;

/// A token bucket in thousandths of a handshake.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    milli: u64,
    at: Instant,
}

impl Bucket {
    fn full(burst: u32, now: Instant) -> Bucket {
        Bucket { milli: u64::from(burst) * MILLI, at: now }
    }

    fn refill(&mut self, burst: u32, per_sec: u32, now: Instant) {
        let ms =
            u64::try_from(now.saturating_duration_since(self.at).as_millis()).unwrap_or(u64::MAX);
        // per_sec handshakes a second are per_sec thousandths a millisecond. Only whole
        // milliseconds are counted, and the time they cover is what is taken: the part of a
        // millisecond left over counts at the next refill (taking `now` would drop it, and
        // calls less than a millisecond apart would never refill).
        let gained = ms.saturating_mul(u64::from(per_sec));
        self.milli = self.milli.saturating_add(gained).min(u64::from(burst) * MILLI);
        self.at += std::time::Duration::from_millis(ms);
    }

    fn has_one(&self) -> bool {
        self.milli >= MILLI
    }

    fn take(&mut self) {
        self.milli = self.milli.saturating_sub(MILLI);
    }
}

/// What the gate decided for one incoming handshake.
#[derive(Debug)]
pub(crate) enum Verdict {
    /// Ask the dialer to prove its address first.
    Retry,
    /// Turn it down.
    Refuse,
    /// Serve it; the ticket is held until the handshake ends.
    Serve(Ticket),
}

/// A handshake under way, counted among its address's (a validator's) or all strangers'.
#[derive(Debug)]
pub(crate) struct Ticket(Option<Arc<AtomicUsize>>);

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Some(n) = self.0.take() {
            n.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// The listener's gate (only the accept loop uses it, so it needs no lock).
#[derive(Debug)]
pub(crate) struct Gate {
    limits: HandshakeLimits,
    /// Committee addresses, with their buckets and their handshakes under way.
    peers: HashMap<SocketAddr, (Bucket, Arc<AtomicUsize>)>,
    ips: HashMap<IpAddr, Bucket>,
    strangers: Bucket,
    in_flight: Arc<AtomicUsize>,
}

impl Gate {
    pub(crate) fn new(limits: HandshakeLimits, peers: &[SocketAddr], now: Instant) -> Gate {
        Gate {
            limits,
            peers: peers
                .iter()
                .map(|a| {
                    (
                        SocketAddr::new(a.ip().to_canonical(), a.port()),
                        (Bucket::full(limits.peer_burst, now), Arc::default()),
                    )
                })
                .collect(),
            ips: HashMap::new(),
            strangers: Bucket::full(limits.strangers_burst, now),
            in_flight: Arc::default(),
        }
    }

    /// The verdict for a handshake from `from` at `now`.
    pub(crate) fn judge(&mut self, from: SocketAddr, validated: bool, now: Instant) -> Verdict {
        if !validated {
            return Verdict::Retry;
        }
        let l = self.limits;
        // An IPv4 peer reaching a socket bound to `[::]` shows as `::ffff:a.b.c.d`.
        let from = SocketAddr::new(from.ip().to_canonical(), from.port());
        if let Some((b, under_way)) = self.peers.get_mut(&from) {
            // A handshake runs for at most 10 s, so the rate alone let one address hold
            // about 48 at once.
            if under_way.load(Ordering::Acquire) >= l.peer_burst as usize {
                return Verdict::Refuse;
            }
            b.refill(l.peer_burst, l.peer_per_sec, now);
            if !b.has_one() {
                return Verdict::Refuse;
            }
            b.take();
            under_way.fetch_add(1, Ordering::AcqRel);
            return Verdict::Serve(Ticket(Some(under_way.clone())));
        }
        if self.in_flight.load(Ordering::Acquire) >= l.stranger_in_flight {
            return Verdict::Refuse;
        }
        self.strangers.refill(l.strangers_burst, l.strangers_per_sec, now);
        if !self.strangers.has_one() {
            return Verdict::Refuse;
        }
        // An IPv6 host holds a /64: its addresses share one bucket.
        let ip = match from.ip() {
            IpAddr::V6(v6) => {
                let mut o = v6.octets();
                o[8..].fill(0);
                IpAddr::from(o)
            }
            v4 => v4,
        };
        if !self.ips.contains_key(&ip) && self.ips.len() >= TRACKED_IPS {
            // Forget the IPs whose buckets are full again: they are as good as new.
            self.ips.retain(|_, b| {
                b.refill(l.ip_burst, l.ip_per_sec, now);
                b.milli < u64::from(l.ip_burst) * MILLI
            });
        }
        if self.ips.len() < TRACKED_IPS || self.ips.contains_key(&ip) {
            let b = self.ips.entry(ip).or_insert_with(|| Bucket::full(l.ip_burst, now));
            b.refill(l.ip_burst, l.ip_per_sec, now);
            if !b.has_one() {
                return Verdict::Refuse;
            }
            b.take();
        }
        self.strangers.take();
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        Verdict::Serve(Ticket(Some(self.in_flight.clone())))
    }
}

/// How long quinn takes a Retry token (its `retry_token_lifetime`, set to this).
pub(crate) const RETRY_TOKEN_LIFE: std::time::Duration = std::time::Duration::from_secs(15);

/// Retried handshakes remembered, at most: past it the oldest is forgotten early (a replay
/// of its token is then taken, as before stop 49), so a flood of retried handshakes from
/// many addresses cannot grow this without bound.
const RETRIES_REMEMBERED: usize = 1 << 16;

/// The original connection ids of the handshakes that came back with a Retry token, with
/// the address each came from, while their tokens live: each token is good for one
/// handshake. (Keyed by the address too: a token is good only from the address it was given
/// to, so someone elsewhere reusing a validator's connection id cannot spend its token.)
#[derive(Debug, Default)]
pub(crate) struct RetriesSeen {
    by_age: VecDeque<(Instant, Vec<u8>)>,
    seen: HashSet<Vec<u8>>,
}

impl RetriesSeen {
    fn key(from: SocketAddr, cid: &[u8]) -> Vec<u8> {
        let mut key = from.to_string().into_bytes();
        key.push(b'/');
        key.extend_from_slice(cid);
        key
    }

    /// Whether a handshake from `from` with the token given for the connection id `cid`
    /// was served before (its token spent), at `now`.
    pub(crate) fn spent(&mut self, from: SocketAddr, cid: &[u8], now: Instant) -> bool {
        self.forget_old(now);
        self.seen.contains(&Self::key(from, cid))
    }

    /// Records that a handshake from `from` with the token for `cid` is served at `now`.
    /// Only served ones are recorded (since stop 50): before, every retried handshake was,
    /// refused ones too, so one host could fill the memory with handshakes the gate
    /// refused and push out the tokens it guarded.
    pub(crate) fn serve(&mut self, from: SocketAddr, cid: &[u8], now: Instant) {
        self.forget_old(now);
        let key = Self::key(from, cid);
        if self.seen.insert(key.clone()) {
            self.by_age.push_back((now, key));
        }
    }

    /// [`RetriesSeen::spent`], and if not, [`RetriesSeen::serve`].
    #[cfg(test)]
    fn first_use(&mut self, from: SocketAddr, cid: &[u8], now: Instant) -> bool {
        if self.spent(from, cid, now) {
            return false;
        }
        self.serve(from, cid, now);
        true
    }

    fn forget_old(&mut self, now: Instant) {
        while let Some((at, old)) = self.by_age.front() {
            if now.saturating_duration_since(*at) <= RETRY_TOKEN_LIFE
                && self.by_age.len() < RETRIES_REMEMBERED
            {
                break;
            }
            self.seen.remove(old);
            self.by_age.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn served(v: &Verdict) -> bool {
        matches!(v, Verdict::Serve(_))
    }

    #[test]
    fn unvalidated_addresses_are_asked_to_retry() {
        let now = Instant::now();
        let mut g = Gate::new(HandshakeLimits::default(), &[addr("10.0.0.1:9000")], now);
        assert!(matches!(g.judge(addr("10.0.0.1:9000"), false, now), Verdict::Retry));
        assert!(matches!(g.judge(addr("10.0.0.9:1234"), false, now), Verdict::Retry));
    }

    #[test]
    fn a_validators_bucket_is_its_own_and_refills() {
        let now = Instant::now();
        let limits = HandshakeLimits { peer_burst: 2, peer_per_sec: 1, ..Default::default() };
        let peer = addr("10.0.0.1:9000");
        let mut g = Gate::new(limits, &[peer], now);
        // Strangers use up everything theirs; the validator still gets in.
        let mut tickets = Vec::new();
        for i in 0..100u16 {
            let v =
                g.judge(SocketAddr::new(IpAddr::from([10, 0, 1, (i % 250) as u8]), i), true, now);
            tickets.push(v);
        }
        assert!(tickets.iter().filter(|v| served(v)).count() <= limits.stranger_in_flight);
        assert!(served(&g.judge(peer, true, now)));
        assert!(served(&g.judge(peer, true, now)));
        assert!(matches!(g.judge(peer, true, now), Verdict::Refuse));
        let later = now + Duration::from_millis(1000);
        assert!(served(&g.judge(peer, true, later)));
        assert!(matches!(g.judge(peer, true, later), Verdict::Refuse));
        // Another port on the validator's IP is a stranger, not the validator: served from
        // the strangers' buckets while the validator's own is empty.
        drop(tickets);
        assert!(served(&g.judge(addr("10.0.0.1:9001"), true, later)));
        assert!(matches!(g.judge(peer, true, later), Verdict::Refuse));
        // Seen through a socket bound to `[::]` (`::ffff:10.0.0.1`), the validator is still
        // the validator: it takes from the validator's bucket (full again), not a stranger's.
        let much_later = later + Duration::from_secs(10);
        assert!(served(&g.judge(addr("[::ffff:10.0.0.1]:9000"), true, much_later)));
        assert!(served(&g.judge(peer, true, much_later)));
        assert!(matches!(g.judge(peer, true, much_later), Verdict::Refuse));
    }

    /// A validator's address holds at most its burst of handshakes under way, however long
    /// it waits for its bucket to refill (since stop 49); one ending gives its place back.
    #[test]
    fn a_validators_handshakes_under_way_are_bounded() {
        let now = Instant::now();
        let limits = HandshakeLimits { peer_burst: 2, peer_per_sec: 1, ..Default::default() };
        let peer = addr("10.0.0.1:9000");
        let mut g = Gate::new(limits, &[peer], now);
        let mut held = Vec::new();
        for s in 0..10 {
            let v = g.judge(peer, true, now + Duration::from_secs(s * 5));
            if served(&v) {
                held.push(v);
            }
        }
        assert_eq!(held.len(), 2);
        held.pop();
        held.push(g.judge(peer, true, now + Duration::from_secs(60)));
        assert!(held.iter().all(served));
        assert!(matches!(g.judge(peer, true, now + Duration::from_secs(120)), Verdict::Refuse));
    }

    /// A Retry token is good for one handshake while it lives; the ids remembered are
    /// forgotten once their tokens expire, and are bounded.
    #[test]
    fn a_retry_token_is_used_once() {
        let now = Instant::now();
        let mut seen = RetriesSeen::default();
        let (a, b) = (addr("10.0.0.1:9000"), addr("10.0.0.2:9000"));
        assert!(seen.first_use(a, b"cid-one", now));
        assert!(!seen.first_use(a, b"cid-one", now + Duration::from_secs(1)));
        assert!(seen.first_use(a, b"cid-two", now + Duration::from_secs(1)));
        // The same id from elsewhere does not spend the first address's use.
        assert!(seen.first_use(b, b"cid-one", now + Duration::from_secs(1)));
        let later = now + RETRY_TOKEN_LIFE + Duration::from_secs(2);
        assert!(seen.first_use(a, b"cid-one", later), "expired: the token itself is refused now");
        assert!(!seen.first_use(a, b"cid-one", later));
        assert_eq!(seen.by_age.len(), 1);
        for i in 0..RETRIES_REMEMBERED as u32 + 10 {
            assert!(seen.first_use(a, &i.to_be_bytes(), later));
        }
        assert_eq!((seen.by_age.len(), seen.seen.len()), (RETRIES_REMEMBERED, RETRIES_REMEMBERED));
        // A handshake looked at and not served (the gate refused it) is not remembered: its
        // token may be used once it is served (since stop 50).
        let mut seen = RetriesSeen::default();
        assert!(!seen.spent(a, b"cid-one", now) && !seen.spent(a, b"cid-one", now));
        assert!(seen.by_age.is_empty() && seen.seen.is_empty());
        seen.serve(a, b"cid-one", now);
        assert!(seen.spent(a, b"cid-one", now));
    }

    #[test]
    fn one_stranger_ip_gets_its_burst_then_its_rate() {
        let now = Instant::now();
        let limits = HandshakeLimits { ip_burst: 3, ip_per_sec: 2, ..Default::default() };
        let mut g = Gate::new(limits, &[], now);
        let from = |port| SocketAddr::new(IpAddr::from([192, 0, 2, 7]), port);
        let first: Vec<bool> = (0..5).map(|p| served(&g.judge(from(p), true, now))).collect();
        assert_eq!(first, [true, true, true, false, false]);
        // Another IP is not held up by the first.
        assert!(served(&g.judge(addr("192.0.2.8:1"), true, now)));
        // 500 ms give 1 handshake back at 2 a second.
        let later = now + Duration::from_millis(500);
        assert!(served(&g.judge(from(9), true, later)));
        assert!(!served(&g.judge(from(10), true, later)));
    }

    #[test]
    fn strangers_share_a_bucket_and_a_bound_on_handshakes_under_way() {
        let now = Instant::now();
        let limits = HandshakeLimits {
            strangers_burst: 5,
            strangers_per_sec: 1,
            stranger_in_flight: 3,
            ..Default::default()
        };
        let mut g = Gate::new(limits, &[], now);
        let ip = |i: u8| SocketAddr::new(IpAddr::from([198, 51, 100, i]), 1);
        let a = g.judge(ip(1), true, now);
        let b = g.judge(ip(2), true, now);
        let c = g.judge(ip(3), true, now);
        assert!(served(&a) && served(&b) && served(&c));
        // Three under way: the fourth is refused until one ends.
        assert!(!served(&g.judge(ip(4), true, now)));
        drop(a);
        drop(b);
        assert!(served(&g.judge(ip(5), true, now)));
        assert!(served(&g.judge(ip(6), true, now)));
        // Five taken from the shared bucket (the refused one took none): it is empty.
        drop(c);
        assert!(!served(&g.judge(ip(7), true, now)));
        assert!(served(&g.judge(ip(7), true, now + Duration::from_secs(1))));
    }

    /// Refills add up across calls less than a millisecond apart, and an IPv6 host's /64
    /// is one bucket.
    #[test]
    fn refills_keep_parts_of_a_millisecond_and_ipv6_hosts_share_a_bucket() {
        let now = Instant::now();
        let limits = HandshakeLimits { ip_burst: 1, ip_per_sec: 1000, ..Default::default() };
        let mut g = Gate::new(limits, &[], now);
        let from = addr("192.0.2.1:1");
        assert!(served(&g.judge(from, true, now)));
        // A thousand a second: one each millisecond, though asked every 0.4 ms.
        let mut t = now;
        let mut got = 0;
        for _ in 0..25 {
            t += Duration::from_micros(400);
            got += usize::from(served(&g.judge(from, true, t)));
        }
        assert_eq!(got, 10, "in 10 ms");
        let limits = HandshakeLimits { ip_burst: 1, ip_per_sec: 0, ..Default::default() };
        let mut g = Gate::new(limits, &[], now);
        assert!(served(&g.judge(addr("[2001:db8::1]:1"), true, now)));
        assert!(!served(&g.judge(addr("[2001:db8::ffff:2]:1"), true, now)), "one /64");
        assert!(served(&g.judge(addr("[2001:db8:0:1::1]:1"), true, now)), "another /64");
    }

    #[test]
    fn the_ips_remembered_stay_bounded() {
        let now = Instant::now();
        let limits = HandshakeLimits {
            strangers_burst: u32::MAX / 1000,
            strangers_per_sec: 0,
            stranger_in_flight: usize::MAX,
            ..Default::default()
        };
        let mut g = Gate::new(limits, &[], now);
        let mut kept = Vec::new();
        for i in 0..(TRACKED_IPS as u32 + 100) {
            let v = g.judge(SocketAddr::new(IpAddr::from(i.to_be_bytes()), 1), true, now);
            assert!(served(&v), "{i}");
            kept.push(v);
        }
        assert!(g.ips.len() <= TRACKED_IPS);
    }
}
