//! The synchronous, cached DNS stub resolver behind [`DnsLookup`].
//!
//! Owns: building queries and checking answers (wire format from
//! `hickory-proto` only; no async runtime), the UDP exchange with TCP
//! fallback on truncation, the retry schedule over the configured name
//! servers, Postfix-style classification of the outcome, and ONE answer
//! cache shared by every thread that holds the resolver (through an `Arc`).
//! Reading the name servers from resolv.conf is here too
//! ([`system_nameservers`]); the search list is not used: every name is
//! queried as absolute.
//!
//! Design: each try opens its own connected UDP socket (bound to the
//! unspecified address of the server's family, port 0), so threads never wait
//! for one another on the network and replies from other addresses never
//! reach us. Each try gets a fresh random 16-bit ID; a datagram whose ID,
//! QR bit or question (name case-insensitively, type, class) does not match
//! is ignored and the try keeps waiting until its deadline. A reply with the
//! TC bit is repeated over TCP to the same server within the same deadline.
//! Queries ask for recursion, carry an EDNS0 OPT record (1232-byte payload)
//! and set the AD bit so a validating resolver reports validation
//! (RFC 6840 5.7); a server answering FORMERR without an OPT record is asked
//! again without EDNS in the same try. Retries: `attempts` rounds, each
//! trying every server in order, `timeout` per try; a round in which every
//! server gave a permanent error ends the schedule early. The cache lock is
//! never held while on the network.
//!
//! Bursts (many threads with a cold cache): within one try the UDP query is
//! sent again, same socket and ID, after [`FIRST_RETRANSMIT`], then after
//! doubling intervals (each with +-25 % jitter, so lost queries are not all
//! repeated at the same moment), until the reply or the try's deadline:
//! a datagram lost in a full receive buffer costs a fraction of a second,
//! not a whole `timeout`, and `timeout` stays the bound of one try. At most
//! `max_in_flight` tries are on the network at once (a counting semaphore;
//! waiting for a slot counts against the try's own deadline). Threads that
//! ask for the same name and type while a lookup for it is running share
//! that lookup (single-flight): they wait for its result, each no longer
//! than its own schedule could have taken (`timeout` x `attempts` x servers),
//! and get `Retry` if it does not come.
//!
//! Error contract (what each [`DnsErrorKind`] means here, after Postfix's
//! dns_lookup()):
//! - `Ok(Answer)`: NOERROR with at least one record of the requested type
//!   owned by the query name or by a CNAME target in the answer's chain.
//!   Records are in the order received (MX exchanges lower-cased, without
//!   the trailing dot; the null MX has an empty exchange). `authenticated`
//!   is the AD bit of the reply.
//! - `NoData` ("Host found but no data record of type X"): NOERROR without
//!   such records.
//! - `NotFound` ("Host not found"): NXDOMAIN.
//! - `Retry` ("Host not found, try again"): no server gave a usable answer
//!   and at least one try timed out, hit a network error, got SERVFAIL or got
//!   a reply that does not parse.
//! - `Fail` ("Non-recoverable error"): every try got REFUSED, FORMERR,
//!   NOTIMP or another permanent response code; also a resolver configured
//!   without name servers.
//! - `Invalid` ("Malformed domain name"): the name cannot be put in a query.
//!
//! Caching: positive answers live for the smallest TTL of the records used;
//! NXDOMAIN and NODATA for the SOA MINIMUM (the smaller of the SOA's minimum
//! field and the SOA record's TTL) when the authority section has an SOA;
//! without an SOA, NODATA lives [`NODATA_NO_SOA_TTL`] seconds (local data of
//! a forwarder such as dnsmasq carries none; without this, every delivery to
//! an IPv4-only MX host would ask AAAA again) and NXDOMAIN is not cached;
//! `Retry`, `Fail` and `Invalid` are never cached; a TTL of 0 is not cached;
//! TTLs are capped at one week. The cache is bounded both in entries and in
//! (estimated) bytes; when either bound would be passed, expired entries go
//! first, then those that expire soonest. Nothing here panics on network
//! input.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6, TcpStream, UdpSocket};
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::config::IpNetwork;
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, RecordType};
use log::{debug, warn};

use super::{Answer, DnsError, DnsErrorKind, DnsLookup, MxRecord, QueryType};

/// The EDNS0 UDP payload size we advertise (the DNS Flag Day 2020 value).
pub const EDNS_PAYLOAD: u16 = 1232;

/// Longest a cache entry lives, whatever the TTL says (RFC 8767's cap).
pub const MAX_CACHE_TTL: u32 = 604_800;

/// Longest per-try timeout accepted; larger values are clamped.
const MAX_TIMEOUT: Duration = Duration::from_secs(3600);

/// Most CNAMEs followed inside one answer section.
const MAX_CNAME_CHAIN: usize = 16;

/// Largest DNS message (UDP datagram or TCP frame).
const MAX_MESSAGE: usize = 65_535;

/// First interval after which a UDP query without a reply is sent again
/// within the same try; later intervals double (with jitter).
pub const FIRST_RETRANSMIT: Duration = Duration::from_millis(250);

/// How long a NODATA answer without an SOA record is cached (seconds).
pub const NODATA_NO_SOA_TTL: u32 = 60;

/// Estimated bookkeeping bytes of one cache entry beyond its name and
/// records (hash-map slot, expiry index node, vectors' headers).
const ENTRY_OVERHEAD: usize = 160;

/// The clock the cache uses for expiry; tests inject a fake one.
pub type Clock = Arc<dyn Fn() -> Instant + Send + Sync>;

const REASON_NOT_FOUND: &str = "Host not found";
const REASON_RETRY: &str = "Host not found, try again";
const REASON_FAIL: &str = "Non-recoverable error";
const REASON_INVALID: &str = "Malformed domain name";

/// How the resolver talks to its name servers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StubSettings {
    /// Servers tried in order in every round.
    pub nameservers: Vec<SocketAddr>,
    /// How long one try (one query to one server) may take, TCP fallback
    /// included.
    pub timeout: Duration,
    /// Rounds over all servers (0 is taken as 1).
    pub attempts: u32,
    /// Cache capacity in entries; 0 disables the cache.
    pub cache_max_entries: usize,
    /// Cache capacity in estimated bytes; 0 disables the cache.
    pub cache_max_bytes: usize,
    /// Most tries on the network at once, over all threads (0 is taken
    /// as 1).
    pub max_in_flight: usize,
    /// Servers whose AD bit is believed; the answers of the others are
    /// never `authenticated`.
    pub trusted_resolvers: Vec<IpNetwork>,
}

impl StubSettings {
    /// glibc's defaults (5 s per try, 2 rounds), a 10,000-entry, 8 MiB
    /// cache and 64 queries in flight.
    pub fn new(nameservers: Vec<SocketAddr>) -> Self {
        Self {
            nameservers,
            timeout: Duration::from_secs(5),
            attempts: 2,
            cache_max_entries: 10_000,
            cache_max_bytes: 8 << 20,
            max_in_flight: 64,
            trusted_resolvers: vec![LOOPBACK_V4, LOOPBACK_V6],
        }
    }
}

/// `127.0.0.0/8` and `::1`, whose AD bit [`StubSettings::new`] believes.
const LOOPBACK_V4: IpNetwork = IpNetwork::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 0)), 8);
const LOOPBACK_V6: IpNetwork = IpNetwork::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 128);

/// The name servers of a resolv.conf file (parsed with the `resolv-conf`
/// crate), each on port 53, in file order. Like glibc, a file without
/// `nameserver` lines means the local host (127.0.0.1 and ::1); lines that
/// do not parse are skipped with a warning. An IPv6 zone (`%eth0`) is kept
/// only when numeric.
pub fn system_nameservers(path: &Path) -> Result<Vec<SocketAddr>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let (config, errors) = resolv_conf::Config::parse_with_errors(&bytes);
    for error in errors {
        warn!("{}: ignoring a line: {error}", path.display());
    }
    let servers = config
        .get_nameservers_or_local()
        .into_iter()
        .map(|ip| match ip {
            resolv_conf::ScopedIp::V4(v4) => SocketAddr::new(IpAddr::V4(v4), 53),
            resolv_conf::ScopedIp::V6(v6, scope) => {
                let scope_id = match scope.as_deref().map(str::parse::<u32>) {
                    None => 0,
                    Some(Ok(id)) => id,
                    Some(Err(_)) => {
                        warn!(
                            "{}: nameserver {v6}: non-numeric zone ignored",
                            path.display()
                        );
                        0
                    }
                };
                SocketAddr::V6(SocketAddrV6::new(v6, 53, 0, scope_id))
            }
        })
        .collect();
    Ok(servers)
}

/// Records of one type, as cached.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Records {
    Mx(Vec<MxRecord>),
    A(Vec<Ipv4Addr>),
    Aaaa(Vec<Ipv6Addr>),
    Tlsa(Vec<crate::dane::Tlsa>),
    Txt(Vec<String>),
}

impl Records {
    fn mx(self) -> Option<Vec<MxRecord>> {
        match self {
            Records::Mx(records) => Some(records),
            _ => None,
        }
    }

    fn a(self) -> Option<Vec<Ipv4Addr>> {
        match self {
            Records::A(records) => Some(records),
            _ => None,
        }
    }

    fn aaaa(self) -> Option<Vec<Ipv6Addr>> {
        match self {
            Records::Aaaa(records) => Some(records),
            _ => None,
        }
    }

    fn tlsa(self) -> Option<Vec<crate::dane::Tlsa>> {
        match self {
            Records::Tlsa(records) => Some(records),
            _ => None,
        }
    }

    fn txt(self) -> Option<Vec<String>> {
        match self {
            Records::Txt(records) => Some(records),
            _ => None,
        }
    }
}

/// A lookup result before it is given its public type: the records (never
/// empty), the AD bit and the canonical name (see [`Answer::canonical`]).
type Outcome = Result<(Records, bool, Option<String>), DnsError>;

/// The records of a lookup as the public answer type `pick` takes; a
/// record set of another type (impossible) is a failure.
fn typed<T>(
    (records, authenticated, canonical): (Records, bool, Option<String>),
    pick: fn(Records) -> Option<Vec<T>>,
) -> Result<Answer<T>, DnsError> {
    match pick(records) {
        Some(records) => Ok(Answer {
            records,
            authenticated,
            canonical,
        }),
        None => Err(DnsError::new(DnsErrorKind::Fail, REASON_FAIL)),
    }
}

/// An outcome and how long it may be cached (None: not at all).
#[derive(Debug)]
struct Classified {
    outcome: Outcome,
    ttl: Option<u32>,
}

type CacheKey = (String, QueryType);

struct CacheEntry {
    expires: Instant,
    /// Insertion number: with `expires`, the entry's key in the expiry index.
    seq: u64,
    /// Estimated bytes (see [`entry_size`]).
    size: usize,
    outcome: Outcome,
}

/// The answer cache: entries by key, and an index by expiry (then by
/// insertion) that eviction pops from the front.
#[derive(Default)]
struct Cache {
    map: HashMap<CacheKey, CacheEntry>,
    by_expiry: BTreeMap<(Instant, u64), CacheKey>,
    bytes: usize,
    seq: u64,
}

impl Cache {
    fn remove(&mut self, key: &CacheKey) {
        if let Some(old) = self.map.remove(key) {
            self.by_expiry.remove(&(old.expires, old.seq));
            self.bytes = self.bytes.saturating_sub(old.size);
        }
    }

    /// Removes the entry that expires first; false when the cache is empty.
    fn evict_first(&mut self) -> bool {
        match self.by_expiry.pop_first() {
            Some((_, key)) => {
                if let Some(old) = self.map.remove(&key) {
                    self.bytes = self.bytes.saturating_sub(old.size);
                }
                true
            }
            None => false,
        }
    }

    /// Drops every entry expired at `now`.
    fn purge_expired(&mut self, now: Instant) {
        while self
            .by_expiry
            .first_key_value()
            .is_some_and(|((expires, _), _)| *expires <= now)
        {
            self.evict_first();
        }
    }

    fn clear(&mut self) {
        self.map.clear();
        self.by_expiry.clear();
        self.bytes = 0;
    }
}

/// The estimated memory of one cache entry: its name, its records or
/// error text, and [`ENTRY_OVERHEAD`].
fn entry_size(key: &CacheKey, outcome: &Outcome) -> usize {
    let canonical = match outcome {
        Ok((_, _, Some(name))) => name.len(),
        _ => 0,
    };
    let data = match outcome {
        Ok((Records::Mx(mx), _, _)) => mx
            .iter()
            .map(|m| {
                m.exchange
                    .len()
                    .saturating_add(std::mem::size_of::<MxRecord>())
            })
            .fold(0usize, usize::saturating_add),
        Ok((Records::A(a), _, _)) => a.len().saturating_mul(4),
        Ok((Records::Aaaa(aaaa), _, _)) => aaaa.len().saturating_mul(16),
        Ok((Records::Tlsa(tlsa), _, _)) => tlsa
            .iter()
            .map(|t| t.data.len().saturating_add(3))
            .fold(0usize, usize::saturating_add),
        Ok((Records::Txt(txt), _, _)) => txt
            .iter()
            .map(|t| t.len().saturating_add(std::mem::size_of::<String>()))
            .fold(0usize, usize::saturating_add),
        Err(e) => e.reason.len(),
    };
    ENTRY_OVERHEAD
        .saturating_add(key.0.len())
        .saturating_add(data)
        .saturating_add(canonical)
}

/// One lookup in progress that other threads may join (single-flight):
/// its outcome once known.
#[derive(Default)]
struct Flight {
    outcome: Mutex<Option<Outcome>>,
    landed: Condvar,
}

impl Flight {
    /// Publishes the outcome (the first one wins) and wakes every waiter.
    fn land(&self, outcome: Outcome) {
        let mut slot = lock(&self.outcome);
        if slot.is_none() {
            *slot = Some(outcome);
        }
        self.landed.notify_all();
    }

    /// Waits for the outcome until `deadline`; None when it did not come.
    fn wait(&self, deadline: Instant) -> Option<Outcome> {
        wait_until(&self.outcome, &self.landed, deadline, |slot| slot.clone())
    }
}

/// The leading thread's hold on a [`Flight`]: on drop (normal or not) the
/// flight lands (with `Retry` if nothing was published) and leaves the
/// table, so no follower waits for a leader that is gone.
struct Leader<'a> {
    flights: &'a Mutex<HashMap<CacheKey, Arc<Flight>>>,
    key: CacheKey,
    flight: Arc<Flight>,
}

impl Drop for Leader<'_> {
    fn drop(&mut self) {
        self.flight
            .land(Err(DnsError::new(DnsErrorKind::Retry, REASON_RETRY)));
        let mut flights = lock(self.flights);
        if flights
            .get(&self.key)
            .is_some_and(|f| Arc::ptr_eq(f, &self.flight))
        {
            flights.remove(&self.key);
        }
    }
}

/// A counting semaphore bounding the tries on the network.
struct Slots {
    free: Mutex<usize>,
    freed: Condvar,
}

/// One slot of [`Slots`], given back on drop.
struct Slot<'a>(&'a Slots);

impl Slots {
    fn new(count: usize) -> Self {
        Self {
            free: Mutex::new(count.max(1)),
            freed: Condvar::new(),
        }
    }

    /// Takes a slot, waiting until `deadline` at most.
    fn acquire(&self, deadline: Instant) -> Option<Slot<'_>> {
        wait_until(&self.free, &self.freed, deadline, |free| {
            (*free > 0).then(|| *free -= 1)
        })
        .map(|()| Slot(self))
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut free = lock(&self.0.free);
        *free = free.saturating_add(1);
        self.0.freed.notify_one();
    }
}

/// Locks a mutex, taking over a poisoned one (every critical section here
/// leaves its data consistent).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Waits on `condvar` until `take` finds what it wants in `mutex`'s value
/// (it runs under the lock, first at once, then after each wake-up), or
/// until `deadline`: None when the deadline came first.
fn wait_until<T, R>(
    mutex: &Mutex<T>,
    condvar: &Condvar,
    deadline: Instant,
    mut take: impl FnMut(&mut T) -> Option<R>,
) -> Option<R> {
    let mut guard = lock(mutex);
    loop {
        if let Some(found) = take(&mut guard) {
            return Some(found);
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return None;
        }
        guard = condvar
            .wait_timeout(guard, remaining)
            .unwrap_or_else(PoisonError::into_inner)
            .0;
    }
}

/// A blocking DNS stub resolver with one shared cache; share it between
/// threads with an `Arc`.
pub struct StubResolver {
    servers: Vec<SocketAddr>,
    trusted_resolvers: Vec<IpNetwork>,
    timeout: Duration,
    attempts: u32,
    cache_max: usize,
    cache_max_bytes: usize,
    cache: Mutex<Cache>,
    flights: Mutex<HashMap<CacheKey, Arc<Flight>>>,
    slots: Slots,
    clock: Clock,
}

impl fmt::Debug for StubResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StubResolver")
            .field("servers", &self.servers)
            .field("timeout", &self.timeout)
            .field("attempts", &self.attempts)
            .field("cache_max", &self.cache_max)
            .field("cache_max_bytes", &self.cache_max_bytes)
            .finish_non_exhaustive()
    }
}

impl StubResolver {
    /// A resolver for `settings`; an empty server list is a `Fail` error
    /// ("no name servers configured").
    pub fn new(settings: StubSettings) -> Result<Self, DnsError> {
        if settings.nameservers.is_empty() {
            return Err(DnsError::new(
                DnsErrorKind::Fail,
                "no name servers configured",
            ));
        }
        Ok(Self {
            servers: settings.nameservers,
            trusted_resolvers: settings.trusted_resolvers,
            timeout: settings.timeout.min(MAX_TIMEOUT),
            attempts: settings.attempts.max(1),
            cache_max: settings.cache_max_entries,
            cache_max_bytes: settings.cache_max_bytes,
            cache: Mutex::new(Cache::default()),
            flights: Mutex::new(HashMap::new()),
            slots: Slots::new(settings.max_in_flight),
            clock: Arc::new(Instant::now),
        })
    }

    /// Replaces the clock the cache uses for expiry (network timeouts always
    /// use the real clock).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// How many entries the cache holds, expired ones included
    /// (diagnostics and tests).
    pub fn cached_entries(&self) -> usize {
        lock(&self.cache).map.len()
    }

    /// The cache's estimated size in bytes (diagnostics and tests).
    pub fn cached_bytes(&self) -> usize {
        lock(&self.cache).bytes
    }

    /// Drops every cache entry.
    pub fn clear_cache(&self) {
        lock(&self.cache).clear();
    }

    /// The longest the whole retry schedule of one lookup can take.
    fn schedule_bound(&self) -> Duration {
        let tries = u32::try_from(self.servers.len())
            .unwrap_or(u32::MAX)
            .saturating_mul(self.attempts);
        self.timeout.saturating_mul(tries)
    }

    fn lookup(&self, name: &str, qtype: QueryType) -> Outcome {
        let qname = query_name(name)?;
        let key = (qname.to_ascii(), qtype);
        if let Some(hit) = self.cache_get(&key) {
            return hit;
        }
        // Join the lookup another thread is running for this key, or lead
        // one. Neither the flight table's lock nor the cache lock is held
        // while on the network.
        let joined = {
            let mut flights = lock(&self.flights);
            match flights.get(&key) {
                Some(flight) => Err(Arc::clone(flight)),
                None => {
                    let flight = Arc::new(Flight::default());
                    flights.insert(key.clone(), Arc::clone(&flight));
                    Ok(flight)
                }
            }
        };
        let flight = match joined {
            Ok(flight) => flight,
            Err(flight) => {
                return flight
                    .wait(deadline_after(self.schedule_bound()))
                    .unwrap_or_else(|| Err(DnsError::new(DnsErrorKind::Retry, REASON_RETRY)));
            }
        };
        let leader = Leader {
            flights: &self.flights,
            key,
            flight,
        };
        // A previous leader may have filled the cache just before we took
        // the lead.
        let classified = match self.cache_get(&leader.key) {
            Some(hit) => Classified {
                outcome: hit,
                ttl: None,
            },
            None => self.resolve(&qname, qtype),
        };
        if let Some(ttl) = classified.ttl {
            self.cache_put(leader.key.clone(), &classified.outcome, ttl);
        }
        leader.flight.land(classified.outcome.clone());
        classified.outcome
    }

    fn cache_get(&self, key: &CacheKey) -> Option<Outcome> {
        if self.cache_max == 0 || self.cache_max_bytes == 0 {
            return None;
        }
        let now = (self.clock)();
        let cache = lock(&self.cache);
        match cache.map.get(key) {
            Some(entry) if entry.expires > now => Some(entry.outcome.clone()),
            _ => None,
        }
    }

    fn cache_put(&self, key: CacheKey, outcome: &Outcome, ttl: u32) {
        if self.cache_max == 0 || self.cache_max_bytes == 0 || ttl == 0 {
            return;
        }
        let size = entry_size(&key, outcome);
        if size > self.cache_max_bytes {
            return;
        }
        let now = (self.clock)();
        let lifetime = Duration::from_secs(u64::from(ttl.min(MAX_CACHE_TTL)));
        let Some(expires) = now.checked_add(lifetime) else {
            return;
        };
        let mut cache = lock(&self.cache);
        cache.remove(&key);
        cache.purge_expired(now);
        // Then the entries that expire soonest, until the new one fits.
        while cache.map.len() >= self.cache_max
            || cache.bytes.saturating_add(size) > self.cache_max_bytes
        {
            if !cache.evict_first() {
                break;
            }
        }
        cache.seq = cache.seq.wrapping_add(1);
        let seq = cache.seq;
        cache.by_expiry.insert((expires, seq), key.clone());
        cache.bytes = cache.bytes.saturating_add(size);
        cache.map.insert(
            key,
            CacheEntry {
                expires,
                seq,
                size,
                outcome: outcome.clone(),
            },
        );
    }

    /// Runs the retry schedule: `attempts` rounds, each trying every server
    /// in order with `timeout` per try, each try holding one of the
    /// `max_in_flight` slots.
    fn resolve(&self, qname: &Name, qtype: QueryType) -> Classified {
        let rtype = record_type(qtype);
        let Some(wire) = build_query(qname, rtype, true) else {
            return Classified {
                outcome: Err(DnsError::new(DnsErrorKind::Invalid, REASON_INVALID)),
                ttl: None,
            };
        };
        let mut permanent_only = true;
        for round in 0..self.attempts {
            let mut round_permanent_only = true;
            for server in &self.servers {
                let deadline = deadline_after(self.timeout);
                // Waiting for a slot counts against this try's deadline.
                let result = match self.slots.acquire(deadline) {
                    Some(_slot) => try_server(*server, &wire, qname, rtype, deadline),
                    None => TryResult::Soft("too many queries in flight".to_string()),
                };
                match result {
                    TryResult::Final(reply) => {
                        let mut classified = classify(&reply, qname, qtype);
                        let trusted = self
                            .trusted_resolvers
                            .iter()
                            .any(|network| network.contains(server.ip()));
                        if !trusted && let Ok((_, authenticated, _)) = &mut classified.outcome {
                            *authenticated = false;
                        }
                        return classified;
                    }
                    TryResult::Permanent(code) => {
                        debug!(
                            "{server}: {qname} {}: permanent error {code} (round {round})",
                            qtype.name()
                        );
                    }
                    TryResult::Soft(why) => {
                        debug!("{server}: {qname} {}: {why} (round {round})", qtype.name());
                        permanent_only = false;
                        round_permanent_only = false;
                    }
                }
            }
            // Every server refused in this round: more rounds would only
            // repeat the refusals.
            if round_permanent_only {
                break;
            }
        }
        let outcome = if permanent_only {
            Err(DnsError::new(DnsErrorKind::Fail, REASON_FAIL))
        } else {
            Err(DnsError::new(DnsErrorKind::Retry, REASON_RETRY))
        };
        Classified { outcome, ttl: None }
    }
}

/// `DnsLookup` for a type with `fn lookup(&self, &str, QueryType) ->
/// Outcome`: each record type through [`typed`].
macro_rules! dns_lookup_via_records {
    ($ty:ty) => {
        impl DnsLookup for $ty {
            fn mx(&self, name: &str) -> Result<Answer<MxRecord>, DnsError> {
                typed(self.lookup(name, QueryType::Mx)?, Records::mx)
            }

            fn a(&self, name: &str) -> Result<Answer<Ipv4Addr>, DnsError> {
                typed(self.lookup(name, QueryType::A)?, Records::a)
            }

            fn aaaa(&self, name: &str) -> Result<Answer<Ipv6Addr>, DnsError> {
                typed(self.lookup(name, QueryType::Aaaa)?, Records::aaaa)
            }

            fn tlsa(&self, name: &str) -> Result<Answer<crate::dane::Tlsa>, DnsError> {
                typed(self.lookup(name, QueryType::Tlsa)?, Records::tlsa)
            }

            fn txt(&self, name: &str) -> Result<Answer<String>, DnsError> {
                typed(self.lookup(name, QueryType::Txt)?, Records::txt)
            }
        }
    };
}

dns_lookup_via_records!(StubResolver);

fn record_type(qtype: QueryType) -> RecordType {
    match qtype {
        QueryType::Mx => RecordType::MX,
        QueryType::A => RecordType::A,
        QueryType::Aaaa => RecordType::AAAA,
        QueryType::Tlsa => RecordType::TLSA,
        QueryType::Txt => RecordType::TXT,
    }
}

fn deadline_after(timeout: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(timeout).unwrap_or(now)
}

/// The absolute, lower-case A-label query name for `name` (one trailing dot
/// tolerated). ASCII names may hold letters, digits, '-' and '_'; other
/// names go through IDNA (UTS #46) to A-labels.
fn query_name(name: &str) -> Result<Name, DnsError> {
    let invalid = || DnsError::new(DnsErrorKind::Invalid, REASON_INVALID);
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    if trimmed.is_empty() || trimmed.split('.').any(str::is_empty) {
        return Err(invalid());
    }
    let parsed = if trimmed.is_ascii() {
        if !trimmed
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        {
            return Err(invalid());
        }
        Name::from_ascii(trimmed).map(|n| n.to_lowercase())
    } else {
        if trimmed
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '\\')
        {
            return Err(invalid());
        }
        Name::from_utf8(trimmed).map(|n| n.to_lowercase())
    };
    let mut qname = parsed.map_err(|_| invalid())?;
    qname.set_fqdn(true);
    if !qname.to_ascii().is_ascii() {
        return Err(invalid());
    }
    Ok(qname)
}

/// The wire form of a recursive query for `qname`/`rtype` with ID 0 (each
/// try patches in its own), with an EDNS0 OPT record when `edns`. The AD bit
/// is set so a validating resolver reports validation (RFC 6840 5.7).
fn build_query(qname: &Name, rtype: RecordType, edns: bool) -> Option<Vec<u8>> {
    let mut msg = Message::new(0, MessageType::Query, OpCode::Query);
    msg.metadata.recursion_desired = true;
    msg.metadata.authentic_data = true;
    msg.add_query(Query::query(qname.clone(), rtype));
    if edns {
        let mut opt = Edns::new();
        opt.set_max_payload(EDNS_PAYLOAD);
        opt.set_version(0);
        msg.set_edns(opt);
    }
    match msg.to_vec() {
        Ok(wire) => Some(wire),
        Err(e) => {
            warn!("cannot encode a query for {qname}: {e}");
            None
        }
    }
}

/// Puts `id` into the first two bytes of a query.
fn set_id(wire: &mut [u8], id: u16) {
    if let Some(head) = wire.get_mut(0..2) {
        head.copy_from_slice(&id.to_be_bytes());
    }
}

/// What one try (one server, one deadline) produced.
#[derive(Debug)]
enum TryResult {
    /// NOERROR or NXDOMAIN: the answer, classified by the caller.
    Final(Message),
    /// REFUSED, FORMERR, NOTIMP or another permanent code: next server.
    Permanent(ResponseCode),
    /// Timeout, network error, SERVFAIL or an unparseable reply: next server.
    Soft(String),
}

/// Why an exchange produced no reply.
#[derive(Debug)]
enum ExchangeError {
    Timeout,
    Network(io::Error),
    Unparseable,
    /// The TCP reply did not belong to the query.
    Mismatch,
    TooLong,
}

impl fmt::Display for ExchangeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExchangeError::Timeout => f.write_str("timeout"),
            ExchangeError::Network(e) => write!(f, "network error: {e}"),
            ExchangeError::Unparseable => f.write_str("reply does not parse"),
            ExchangeError::Mismatch => f.write_str("reply does not match the query"),
            ExchangeError::TooLong => f.write_str("query too long for TCP"),
        }
    }
}

fn try_server(
    server: SocketAddr,
    edns_wire: &[u8],
    qname: &Name,
    rtype: RecordType,
    deadline: Instant,
) -> TryResult {
    let mut wire = edns_wire.to_vec();
    let mut edns = true;
    loop {
        let id: u16 = rand::random();
        set_id(&mut wire, id);
        let mut reply = match udp_exchange(server, &wire, id, qname, rtype, deadline) {
            Ok(reply) => reply,
            Err(e) => return TryResult::Soft(e.to_string()),
        };
        if reply.metadata.truncation {
            debug!("{server}: {qname} {rtype}: truncated, retrying over TCP");
            reply = match tcp_exchange(server, &wire, id, qname, rtype, deadline) {
                Ok(reply) => reply,
                Err(e) => return TryResult::Soft(format!("TCP: {e}")),
            };
        }
        match reply.metadata.response_code {
            ResponseCode::NoError | ResponseCode::NXDomain => return TryResult::Final(reply),
            ResponseCode::ServFail => return TryResult::Soft("SERVFAIL".to_string()),
            // A server that does not know EDNS answers FORMERR without an
            // OPT record (RFC 6891 7): ask it again without one.
            ResponseCode::FormErr if edns && reply.edns.is_none() => {
                debug!("{server}: FORMERR without OPT, retrying without EDNS");
                edns = false;
                match build_query(qname, rtype, false) {
                    Some(plain) => wire = plain,
                    None => return TryResult::Permanent(ResponseCode::FormErr),
                }
            }
            code => return TryResult::Permanent(code),
        }
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// `interval` with +-25 % random jitter, so that queries lost together are
/// not all sent again at the same moment.
fn jittered(interval: Duration) -> Duration {
    let permille = 750 + rand::random::<u32>() % 501;
    interval.saturating_mul(permille) / 1000
}

/// Sends `wire` from a fresh connected UDP socket and waits until
/// `deadline` for the matching reply, ignoring datagrams that do not match;
/// sends it again after [`FIRST_RETRANSMIT`] and then after doubling
/// intervals (with jitter) while no reply came.
fn udp_exchange(
    server: SocketAddr,
    wire: &[u8],
    id: u16,
    qname: &Name,
    rtype: RecordType,
    deadline: Instant,
) -> Result<Message, ExchangeError> {
    let local: SocketAddr = match server {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local).map_err(ExchangeError::Network)?;
    socket.connect(server).map_err(ExchangeError::Network)?;
    socket.send(wire).map_err(ExchangeError::Network)?;
    let mut interval = FIRST_RETRANSMIT;
    let mut resend_at = deadline_after(jittered(interval));
    let mut buf = vec![0u8; MAX_MESSAGE];
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Err(ExchangeError::Timeout);
        }
        if now >= resend_at {
            // The query or its reply may have been dropped (a full receive
            // buffer in a burst): send it again, same ID, and keep waiting
            // for a reply to either copy.
            debug!("{server}: {qname} {rtype}: no reply after {interval:?}, sending again");
            socket.send(wire).map_err(ExchangeError::Network)?;
            interval = interval.saturating_mul(2);
            resend_at = deadline_after(jittered(interval));
        }
        let wait = deadline.min(resend_at).saturating_duration_since(now);
        socket
            .set_read_timeout(Some(wait.max(Duration::from_millis(1))))
            .map_err(ExchangeError::Network)?;
        match socket.recv(&mut buf) {
            Ok(len) => {
                let datagram = buf.get(..len).unwrap_or_default();
                match check_reply(datagram, id, qname, rtype) {
                    Checked::Reply(reply) => return Ok(reply),
                    Checked::Unparseable => return Err(ExchangeError::Unparseable),
                    Checked::Ignore => {
                        debug!("{server}: ignoring a datagram that does not match the query");
                    }
                }
            }
            Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ExchangeError::Network(e)),
        }
    }
}

/// Sends `wire` over TCP (2-byte length framing) and reads one reply, all
/// before `deadline`.
fn tcp_exchange(
    server: SocketAddr,
    wire: &[u8],
    id: u16,
    qname: &Name,
    rtype: RecordType,
    deadline: Instant,
) -> Result<Message, ExchangeError> {
    let remaining = deadline.saturating_duration_since(Instant::now());
    if remaining.is_zero() {
        return Err(ExchangeError::Timeout);
    }
    let mut stream = TcpStream::connect_timeout(&server, remaining).map_err(|e| {
        if is_timeout(&e) {
            ExchangeError::Timeout
        } else {
            ExchangeError::Network(e)
        }
    })?;
    // Best effort: a query is one small write either way.
    let _ = stream.set_nodelay(true);
    let len = u16::try_from(wire.len()).map_err(|_| ExchangeError::TooLong)?;
    let mut framed = Vec::with_capacity(wire.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(wire);
    write_all_by(&mut stream, &framed, deadline)?;
    let mut head = [0u8; 2];
    read_exact_by(&mut stream, &mut head, deadline)?;
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(head))];
    read_exact_by(&mut stream, &mut buf, deadline)?;
    match check_reply(&buf, id, qname, rtype) {
        Checked::Reply(reply) => Ok(reply),
        Checked::Unparseable => Err(ExchangeError::Unparseable),
        Checked::Ignore => Err(ExchangeError::Mismatch),
    }
}

fn write_all_by(
    stream: &mut TcpStream,
    data: &[u8],
    deadline: Instant,
) -> Result<(), ExchangeError> {
    let mut sent = 0;
    while let Some(rest) = data.get(sent..).filter(|r| !r.is_empty()) {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(ExchangeError::Timeout);
        }
        stream
            .set_write_timeout(Some(remaining))
            .map_err(ExchangeError::Network)?;
        match stream.write(rest) {
            Ok(0) => return Err(ExchangeError::Network(io::ErrorKind::WriteZero.into())),
            Ok(n) => sent += n,
            Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ExchangeError::Network(e)),
        }
    }
    Ok(())
}

fn read_exact_by(
    stream: &mut TcpStream,
    buf: &mut [u8],
    deadline: Instant,
) -> Result<(), ExchangeError> {
    let mut filled = 0;
    while let Some(rest) = buf.get_mut(filled..).filter(|r| !r.is_empty()) {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(ExchangeError::Timeout);
        }
        stream
            .set_read_timeout(Some(remaining))
            .map_err(ExchangeError::Network)?;
        match stream.read(rest) {
            Ok(0) => return Err(ExchangeError::Network(io::ErrorKind::UnexpectedEof.into())),
            Ok(n) => filled += n,
            Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ExchangeError::Network(e)),
        }
    }
    Ok(())
}

/// What a received message is to the query waiting for it.
#[derive(Debug)]
enum Checked {
    /// The reply to our query.
    Reply(Message),
    /// Not ours (other ID, not a response, other question): keep waiting.
    Ignore,
    /// Carries our ID and the QR bit but does not parse.
    Unparseable,
}

/// Checks a received message against the query: the ID, the QR bit, the
/// opcode and the question (name case-insensitively, type, class IN). An
/// error reply (neither NOERROR nor NXDOMAIN) may omit the question, as
/// FORMERR replies often do.
fn check_reply(data: &[u8], id: u16, qname: &Name, rtype: RecordType) -> Checked {
    let (Some(&id_hi), Some(&id_lo), Some(&flags)) = (data.first(), data.get(1), data.get(2))
    else {
        return Checked::Ignore;
    };
    if u16::from_be_bytes([id_hi, id_lo]) != id || flags & 0x80 == 0 {
        return Checked::Ignore;
    }
    let Ok(reply) = Message::from_vec(data) else {
        return Checked::Unparseable;
    };
    if reply.metadata.id != id
        || reply.metadata.message_type != MessageType::Response
        || reply.metadata.op_code != OpCode::Query
    {
        return Checked::Ignore;
    }
    let question_ok = match reply.queries.as_slice() {
        [q] => q.name() == qname && q.query_type() == rtype && q.query_class() == DNSClass::IN,
        [] => !matches!(
            reply.metadata.response_code,
            ResponseCode::NoError | ResponseCode::NXDomain
        ),
        _ => false,
    };
    if question_ok {
        Checked::Reply(reply)
    } else {
        Checked::Ignore
    }
}

/// Classifies a NOERROR or NXDOMAIN reply (Postfix's dns_lookup() rules)
/// and says how long the outcome may be cached.
fn classify(reply: &Message, qname: &Name, qtype: QueryType) -> Classified {
    if reply.metadata.response_code == ResponseCode::NXDomain {
        return Classified {
            outcome: Err(DnsError::new(DnsErrorKind::NotFound, REASON_NOT_FOUND)),
            ttl: negative_ttl(reply),
        };
    }
    let rtype = record_type(qtype);
    // Owners we accept: the query name and every CNAME target chained from
    // it inside this answer section.
    let mut owners: Vec<&Name> = vec![qname];
    let mut min_ttl = u32::MAX;
    let mut current = qname;
    for _ in 0..MAX_CNAME_CHAIN {
        let next = reply.answers.iter().find_map(|r| match &r.data {
            RData::CNAME(target) if r.dns_class == DNSClass::IN && &r.name == current => {
                Some((&target.0, r.ttl))
            }
            _ => None,
        });
        let Some((target, ttl)) = next else { break };
        if owners.contains(&target) {
            break;
        }
        min_ttl = min_ttl.min(ttl);
        owners.push(target);
        current = target;
    }
    // The end of the CNAME chain, when there was one.
    let canonical = (current != qname).then(|| {
        let mut name = current.to_ascii().to_ascii_lowercase();
        if name.len() > 1 && name.ends_with('.') {
            name.pop();
        }
        name
    });
    let mut mx = Vec::new();
    let mut a = Vec::new();
    let mut aaaa = Vec::new();
    let mut tlsa = Vec::new();
    let mut txt = Vec::new();
    let mut found = false;
    for record in &reply.answers {
        if record.dns_class != DNSClass::IN
            || record.record_type() != rtype
            || !owners.contains(&&record.name)
        {
            continue;
        }
        match &record.data {
            RData::MX(m) => mx.push(MxRecord {
                preference: m.preference,
                exchange: exchange_name(&m.exchange),
            }),
            RData::A(v4) => a.push(v4.0),
            RData::AAAA(v6) => aaaa.push(v6.0),
            RData::TLSA(t) => tlsa.push(crate::dane::Tlsa {
                usage: u8::from(t.cert_usage),
                selector: u8::from(t.selector),
                matching: u8::from(t.matching),
                data: t.cert_data.clone(),
            }),
            // The character-strings of one record joined (RFC 7208 3.3,
            // RFC 8461 3.1); bytes that are not UTF-8 become U+FFFD.
            RData::TXT(t) => txt.push(
                t.txt_data
                    .iter()
                    .map(|part| String::from_utf8_lossy(part))
                    .collect::<String>(),
            ),
            _ => continue,
        }
        found = true;
        min_ttl = min_ttl.min(record.ttl);
    }
    if !found {
        return Classified {
            outcome: Err(DnsError::new(
                DnsErrorKind::NoData,
                format!("Host found but no data record of type {}", qtype.name()),
            )),
            ttl: match soa_ttl(reply) {
                Some(ttl) => Some(ttl).filter(|&t| t > 0),
                None => Some(NODATA_NO_SOA_TTL),
            },
        };
    }
    let records = match qtype {
        QueryType::Mx => Records::Mx(mx),
        QueryType::A => Records::A(a),
        QueryType::Aaaa => Records::Aaaa(aaaa),
        QueryType::Tlsa => Records::Tlsa(tlsa),
        QueryType::Txt => Records::Txt(txt),
    };
    Classified {
        outcome: Ok((records, reply.metadata.authentic_data, canonical)),
        ttl: Some(min_ttl).filter(|&t| t > 0),
    }
}

/// An MX exchange as [`MxRecord`] wants it: lower case, no trailing dot,
/// empty for the root (null MX).
fn exchange_name(name: &Name) -> String {
    let ascii = name.to_lowercase().to_ascii();
    ascii.strip_suffix('.').unwrap_or(&ascii).to_string()
}

/// RFC 2308: a negative answer lives for the smaller of the SOA's MINIMUM
/// and the SOA record's TTL; without an SOA it is not cached.
fn negative_ttl(reply: &Message) -> Option<u32> {
    soa_ttl(reply).filter(|&t| t > 0)
}

/// The smaller of the SOA's MINIMUM and the SOA record's TTL, when the
/// authority section has an SOA.
fn soa_ttl(reply: &Message) -> Option<u32> {
    reply.authorities.iter().find_map(|r| match &r.data {
        RData::SOA(soa) => Some(soa.minimum.min(r.ttl)),
        _ => None,
    })
}

/// A [`DnsLookup`] without the network, for [`crate::fuzzing`]: each lookup
/// is answered by the next datagram of a list (none left: a timeout),
/// checked against the lookup's question with the datagram's own ID and
/// classified as [`StubResolver`] classifies a reply from a server. No
/// cache, no retries.
pub(crate) struct ReplayedReplies<'a> {
    replies: Mutex<std::vec::IntoIter<&'a [u8]>>,
}

impl<'a> ReplayedReplies<'a> {
    pub(crate) fn new(replies: Vec<&'a [u8]>) -> Self {
        Self {
            replies: Mutex::new(replies.into_iter()),
        }
    }

    fn lookup(&self, name: &str, qtype: QueryType) -> Outcome {
        let qname = query_name(name)?;
        let rtype = record_type(qtype);
        let retry = || Err(DnsError::new(DnsErrorKind::Retry, REASON_RETRY));
        let next = self
            .replies
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .next();
        let Some(data) = next else {
            return retry();
        };
        let id = match data {
            [hi, lo, ..] => u16::from_be_bytes([*hi, *lo]),
            _ => 0,
        };
        match check_reply(data, id, &qname, rtype) {
            Checked::Reply(reply) => match reply.metadata.response_code {
                ResponseCode::NoError | ResponseCode::NXDomain => {
                    classify(&reply, &qname, qtype).outcome
                }
                ResponseCode::ServFail => retry(),
                _ => Err(DnsError::new(DnsErrorKind::Fail, REASON_FAIL)),
            },
            Checked::Ignore | Checked::Unparseable => retry(),
        }
    }
}

dns_lookup_via_records!(ReplayedReplies<'_>);

#[cfg(test)]
#[path = "stub_tests.rs"]
mod tests;
