//! Server-side prepared statements across backends.
//!
//! Clients see statement ids the funnel assigns. Each client keeps, per
//! statement, its SQL text, the schema it was prepared in, its parameter
//! count and the parameter types it last sent. Each backend keeps a bounded
//! cache of the statements prepared on it, keyed by (schema, SQL): a
//! `COM_STMT_EXECUTE` runs on whichever backend is free, is prepared there
//! first when that backend has not seen the SQL, and gets its statement id
//! (and, where needed, its parameter types) rewritten.

use std::cell::RefCell;
use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::rc::Rc;

use super::statement::StatementFacts;

/// Statements a backend keeps prepared before the least recently used is
/// closed.
pub const BACKEND_STMT_CACHE: usize = 256;

#[derive(Clone, Debug)]
pub struct ClientStmt {
    pub sql: Rc<[u8]>,
    pub schema: Option<String>,
    /// Hash of (schema, sql): the backend cache key.
    pub key: u64,
    pub num_params: u16,
    /// Parameter types (2 bytes each) the client last sent with
    /// new-params-bound = 1; empty until then.
    pub types: Vec<u8>,
    /// The statement scan of `sql`, made once when it was prepared: what
    /// each execute may do to the session.
    pub facts: StatementFacts,
}

/// How many client statements hold each backend cache key (funnel-wide).
/// A key no client holds any more is listed in `released`: its copies on
/// the backends are closed (the loop drains the list), so that mysqld's
/// `Prepared_stmt_count` goes back down as it would on direct connections.
#[derive(Debug, Default)]
pub struct StmtHolders {
    counts: HashMap<u64, u32>,
    released: Vec<u64>,
}

impl StmtHolders {
    fn hold(&mut self, key: u64) {
        *self.counts.entry(key).or_insert(0) += 1;
    }

    fn let_go(&mut self, key: u64) {
        if let Some(n) = self.counts.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                self.counts.remove(&key);
                self.released.push(key);
            }
        }
    }

    /// Some client statement holds `key`.
    pub fn is_held(&self, key: u64) -> bool {
        self.counts.contains_key(&key)
    }

    /// Keys no client holds any more (one that was held again since is
    /// left out), in the order they were let go.
    pub fn take_released(&mut self, out: &mut Vec<u64>) {
        out.clear();
        for key in self.released.drain(..) {
            if !self.counts.contains_key(&key) {
                out.push(key);
            }
        }
        out.sort_unstable();
        out.dedup();
        if self.counts.is_empty() && self.counts.capacity() > 64 {
            self.counts = HashMap::new();
        }
    }

    pub fn has_released(&self) -> bool {
        !self.released.is_empty()
    }

    /// Distinct keys held.
    pub fn len(&self) -> usize {
        self.counts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }
}

/// Keyed by ids the funnel hands out, not chosen by the client: no random
/// seed is needed against collisions, and its 16 B per client are saved.
type StmtMap = HashMap<u32, ClientStmt, BuildHasherDefault<DefaultHasher>>;

/// The funnel-wide count of prepared statements and reserved slots
/// (`max_prepared_stmt_count`), shared by every loop's clients.
#[derive(Clone, Debug, Default)]
pub struct StmtTotal(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl StmtTotal {
    pub fn get(&self) -> usize {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn add(&self, n: usize) {
        self.0.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }

    fn sub(&self, n: usize) {
        use std::sync::atomic::Ordering::Relaxed;
        let _ = self
            .0
            .fetch_update(Relaxed, Relaxed, |v| Some(v.saturating_sub(n)));
    }

    /// One more, unless `max` are taken (another loop may take the last).
    fn take_below(&self, max: usize) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        self.0
            .fetch_update(Relaxed, Relaxed, |v| (v < max).then_some(v + 1))
            .is_ok()
    }
}

/// A client's prepared statements, by the ids the funnel gave them, counted
/// in a funnel-wide total (`max_prepared_stmt_count`) and in the holders of
/// their backend cache keys: every insert, removal, clear and the drop of
/// the whole set (the client left) keeps both right, wherever it happens.
#[derive(Debug)]
pub struct ClientStmts {
    map: StmtMap,
    /// Statements of all clients, plus reserved slots.
    total: StmtTotal,
    holders: Rc<RefCell<StmtHolders>>,
    /// A slot taken in `total` for a prepare on its way to mysqld: turned
    /// into the statement by `insert`, or given back by `release` (the next
    /// command) or the drop.
    reserved: bool,
    /// Bytes of SQL held (for giving memory back to the OS).
    bytes: usize,
}

/// Why a prepare is refused: which limit, and its value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrepareLimit {
    PerClient(usize),
    Total(usize),
}

impl PrepareLimit {
    /// mysqld's ERR 1461 message, naming the funnel's limit.
    pub fn message(self) -> String {
        match self {
            PrepareLimit::Total(n) => format!(
                "Can't create more than max_prepared_stmt_count statements (current value: {n})"
            ),
            PrepareLimit::PerClient(n) => format!(
                "Can't create more than max_prepared_stmts_per_client statements (current value: {n}); funnel: close some of this connection's prepared statements"
            ),
        }
    }
}

impl ClientStmts {
    pub fn new(total: StmtTotal, holders: Rc<RefCell<StmtHolders>>) -> Self {
        ClientStmts {
            map: StmtMap::default(),
            total,
            holders,
            reserved: false,
            bytes: 0,
        }
    }

    /// Take a slot for one more statement, or say which limit forbids it.
    pub fn reserve(&mut self, per_client: usize, max_total: usize) -> Result<(), PrepareLimit> {
        self.release();
        // mysqld's own limit (and message) first, when both are reached.
        if self.total.get() >= max_total {
            return Err(PrepareLimit::Total(max_total));
        }
        if self.map.len() >= per_client {
            return Err(PrepareLimit::PerClient(per_client));
        }
        if !self.total.take_below(max_total) {
            return Err(PrepareLimit::Total(max_total));
        }
        self.reserved = true;
        Ok(())
    }

    /// Give back a slot whose prepare did not make a statement.
    pub fn release(&mut self) {
        if self.reserved {
            self.reserved = false;
            self.total.sub(1);
        }
    }

    pub fn insert(&mut self, id: u32, st: ClientStmt) -> Option<ClientStmt> {
        if self.reserved {
            self.reserved = false;
        } else {
            self.total.add(1);
        }
        self.bytes += st.sql.len();
        self.holders.borrow_mut().hold(st.key);
        let old = self.map.insert(id, st);
        if let Some(old) = &old {
            self.forget(old);
        }
        old
    }

    pub fn remove(&mut self, id: &u32) -> Option<ClientStmt> {
        let st = self.map.remove(id)?;
        self.forget(&st);
        if self.map.is_empty() {
            // Give the table's memory back, not just its entries.
            self.map = StmtMap::default();
        } else if self.map.capacity() > 64 && self.map.len() < self.map.capacity() / 4 {
            // Most were closed: the table shrinks with them (amortised).
            self.map.shrink_to(self.map.len() * 2);
        }
        Some(st)
    }

    fn forget(&mut self, st: &ClientStmt) {
        self.total.sub(1);
        self.bytes = self.bytes.saturating_sub(st.sql.len());
        self.holders.borrow_mut().let_go(st.key);
    }

    /// Forget every statement and free the table itself.
    pub fn clear(&mut self) {
        self.total.sub(self.map.len());
        {
            let mut holders = self.holders.borrow_mut();
            for st in self.map.values() {
                holders.let_go(st.key);
            }
        }
        self.release();
        self.map = StmtMap::default();
        self.bytes = 0;
    }

    /// Give statement `id` another backend cache key (its schema was
    /// dropped, so it is prepared without one), keeping the holders right.
    pub fn rekey(&mut self, id: u32, key: u64) {
        if let Some(st) = self.map.get_mut(&id) {
            let mut holders = self.holders.borrow_mut();
            holders.hold(key);
            holders.let_go(st.key);
            st.key = key;
        }
    }

    pub fn get(&self, id: &u32) -> Option<&ClientStmt> {
        self.map.get(id)
    }

    pub fn get_mut(&mut self, id: &u32) -> Option<&mut ClientStmt> {
        self.map.get_mut(id)
    }

    pub fn values(&self) -> impl Iterator<Item = &ClientStmt> {
        self.map.values()
    }

    /// Every statement with the id the client knows it by.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &ClientStmt)> {
        self.map.iter().map(|(&id, st)| (id, st))
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Slots this set takes in the funnel-wide total: its statements and a
    /// reserved one.
    pub fn held(&self) -> usize {
        self.map.len() + usize::from(self.reserved)
    }

    /// Bytes of SQL text the statements hold.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for ClientStmts {
    fn drop(&mut self) {
        self.clear();
    }
}

/// Memory freed by a client that held this many bytes of statements is
/// handed back to the OS at once (glibc keeps freed small blocks otherwise).
pub const TRIM_AFTER_BYTES: usize = 1 << 20;

/// Return freed heap memory to the OS (glibc only; elsewhere a no-op).
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The backend cache key of a statement prepared in `schema` by a client of
/// `pool` (whose backends alone can run it).
pub fn stmt_key(pool: usize, schema: Option<&str>, sql: &[u8]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    pool.hash(&mut h);
    schema.hash(&mut h);
    sql.hash(&mut h);
    h.finish()
}

/// The cache key of a client's statement whose SQL (and schema) another of
/// its live statements already has: one of its own, so that the two get
/// separate backend statements (a cursor or long data belongs to one
/// statement; with a shared one, executing either would clobber the other's).
pub fn own_stmt_key(key: u64, funnel_id: u32) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    funnel_id.hash(&mut h);
    h.finish()
}

#[derive(Clone, Debug)]
pub struct CachedStmt {
    pub id: u32,
    pub sql: Rc<[u8]>,
    pub schema: Option<String>,
    /// Types the backend statement holds from its last execute with
    /// new-params-bound = 1 (empty: none yet).
    pub types: Vec<u8>,
    pub last_used: u64,
}

/// A backend's prepared statements.
#[derive(Default, Debug)]
pub struct StmtCache {
    entries: HashMap<u64, CachedStmt>,
    clock: u64,
    /// Backend statement ids to close before the next command.
    pub to_close: Vec<u32>,
}

/// The same statement text; at once when it is the same copy (a client's
/// statement and the backends' entries share theirs).
fn same_text(a: &[u8], b: &[u8]) -> bool {
    (std::ptr::eq(a.as_ptr(), b.as_ptr()) && a.len() == b.len()) || a == b
}

impl StmtCache {
    pub fn get_mut(
        &mut self,
        key: u64,
        schema: Option<&str>,
        sql: &[u8],
    ) -> Option<&mut CachedStmt> {
        self.clock += 1;
        let clock = self.clock;
        let e = self
            .entries
            .get_mut(&key)
            .filter(|e| e.schema.as_deref() == schema && same_text(&e.sql, sql))?;
        e.last_used = clock;
        Some(e)
    }

    /// Record a statement prepared on the backend; an older one for the same
    /// key, or the least recently used when full, is queued for closing.
    pub fn insert(&mut self, key: u64, id: u32, sql: Rc<[u8]>, schema: Option<String>) {
        self.clock += 1;
        if let Some(old) = self.entries.insert(
            key,
            CachedStmt {
                id,
                sql,
                schema,
                types: Vec::new(),
                last_used: self.clock,
            },
        ) {
            if old.id != id {
                self.to_close.push(old.id);
            }
        }
        if self.entries.len() > BACKEND_STMT_CACHE {
            if let Some((&k, _)) = self.entries.iter().min_by_key(|(_, e)| e.last_used) {
                if let Some(e) = self.entries.remove(&k) {
                    self.to_close.push(e.id);
                }
            }
        }
    }

    /// Forget a statement and queue it for closing (which also closes its
    /// cursor on the backend). True if this backend had it.
    pub fn close(&mut self, key: u64) -> bool {
        match self.entries.remove(&key) {
            Some(e) => {
                self.to_close.push(e.id);
                true
            }
            None => false,
        }
    }

    /// Queue for closing every statement but those `keep` names (mysqld is
    /// out of statement slots: the cache gives way, and what a client
    /// executes again is prepared again). How many were queued.
    pub fn evict(&mut self, keep: impl Fn(u64) -> bool) -> usize {
        let before = self.to_close.len();
        let to_close = &mut self.to_close;
        self.entries.retain(|&k, e| {
            let kept = keep(k);
            if !kept {
                to_close.push(e.id);
            }
            kept
        });
        if self.entries.is_empty() {
            self.entries = HashMap::new();
        }
        self.to_close.len() - before
    }

    /// The backend's statements are gone (reset or reconnect).
    pub fn clear(&mut self) {
        self.entries.clear();
        self.to_close.clear();
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The keys of the statements prepared here.
    pub fn keys(&self) -> impl Iterator<Item = u64> + '_ {
        self.entries.keys().copied()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Where the parts of a `COM_STMT_EXECUTE` payload are (command byte at 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExecuteLayout {
    /// Offset of the new-params-bound flag, if the statement has parameters.
    pub bound_at: Option<usize>,
    pub bound: bool,
}

/// Find the new-params-bound flag of an execute for a statement with
/// `num_params` parameters. None: the packet is too short.
pub fn execute_layout(payload: &[u8], num_params: u16) -> Option<ExecuteLayout> {
    // cmd(1) stmt_id(4) flags(1) iteration_count(4)
    const FIXED: usize = 10;
    if payload.len() < FIXED {
        return None;
    }
    if num_params == 0 {
        return Some(ExecuteLayout {
            bound_at: None,
            bound: false,
        });
    }
    let at = FIXED + usize::from(num_params).div_ceil(8);
    let flag = *payload.get(at)?;
    Some(ExecuteLayout {
        bound_at: Some(at),
        bound: flag == 1,
    })
}

/// The types a bound execute carries (2 bytes per parameter).
pub fn execute_types(payload: &[u8], layout: ExecuteLayout, num_params: u16) -> Option<&[u8]> {
    let at = layout.bound_at? + 1;
    if !layout.bound {
        return None;
    }
    payload.get(at..at + 2 * usize::from(num_params))
}

/// Write `payload` with the statement id replaced and, when `insert_types`
/// is given (the client sent no types but the backend statement needs
/// them), the new-params-bound flag set and the types inserted after it.
pub fn rewrite_execute(
    out: &mut Vec<u8>,
    payload: &[u8],
    backend_id: u32,
    layout: ExecuteLayout,
    insert_types: Option<&[u8]>,
) {
    out.extend_from_slice(&payload[..1]);
    out.extend_from_slice(&backend_id.to_le_bytes());
    match (layout.bound_at, insert_types) {
        (Some(at), Some(types)) if !layout.bound => {
            out.extend_from_slice(&payload[5..at]);
            out.push(1);
            out.extend_from_slice(types);
            out.extend_from_slice(&payload[at + 1..]);
        }
        _ => out.extend_from_slice(&payload[5..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stmt(sql: &str) -> ClientStmt {
        ClientStmt {
            sql: Rc::from(sql.as_bytes()),
            schema: None,
            key: 0,
            num_params: 0,
            types: Vec::new(),
            facts: StatementFacts::default(),
        }
    }

    #[test]
    fn client_stmts_count_in_the_total_and_refuse_past_limits() {
        let total = StmtTotal::default();
        let holders = Rc::new(RefCell::new(StmtHolders::default()));
        let mut a = ClientStmts::new(total.clone(), holders.clone());
        let mut b = ClientStmts::new(total.clone(), holders.clone());
        assert_eq!(a.reserve(2, 3), Ok(()));
        a.insert(1, stmt("SELECT 1"));
        assert_eq!(a.reserve(2, 3), Ok(()));
        a.insert(2, stmt("SELECT 22"));
        assert_eq!((total.get(), a.bytes()), (2, 17));
        assert_eq!(a.reserve(2, 3), Err(PrepareLimit::PerClient(2)));
        // A reserved slot counts until the next command gives it back.
        assert_eq!(b.reserve(5, 3), Ok(()));
        assert_eq!(total.get(), 3);
        assert_eq!(
            b.reserve(5, 3),
            Ok(()),
            "its own stale slot is given back first"
        );
        b.release();
        assert_eq!(total.get(), 2);
        b.insert(7, stmt("x"));
        assert_eq!(b.reserve(5, 3), Err(PrepareLimit::Total(3)));
        assert!(a.remove(&1).is_some());
        assert!(a.remove(&1).is_none());
        // A table most of whose statements were closed shrinks.
        let mut big = ClientStmts::new(StmtTotal::default(), holders.clone());
        for i in 0..1000 {
            big.insert(i, stmt("s"));
        }
        let full = big.map.capacity();
        for i in 0..990 {
            big.remove(&i);
        }
        assert!(
            big.map.capacity() < full / 10,
            "{} of {full}",
            big.map.capacity()
        );
        assert_eq!(big.len(), 10);
        assert_eq!(total.get(), 2);
        a.clear();
        assert_eq!((total.get(), a.len(), a.bytes()), (1, 0, 0));
        assert_eq!(b.reserve(5, 3), Ok(()));
        drop(b);
        assert_eq!(total.get(), 0);
        assert!(PrepareLimit::Total(16382).message().starts_with(
            "Can't create more than max_prepared_stmt_count statements (current value: 16382)"
        ));
    }

    fn keyed(key: u64) -> ClientStmt {
        ClientStmt {
            key,
            ..stmt("SELECT ?")
        }
    }

    #[test]
    fn a_key_is_released_when_its_last_holder_lets_go() {
        let total = StmtTotal::default();
        let holders = Rc::new(RefCell::new(StmtHolders::default()));
        let mut a = ClientStmts::new(total.clone(), holders.clone());
        let mut b = ClientStmts::new(total.clone(), holders.clone());
        let mut out = Vec::new();
        a.insert(1, keyed(10));
        a.insert(2, keyed(10));
        b.insert(1, keyed(10));
        b.insert(2, keyed(20));
        assert_eq!(holders.borrow().len(), 2);
        a.remove(&1);
        b.remove(&1);
        assert!(!holders.borrow().has_released(), "a still holds 10");
        a.remove(&2);
        assert!(!holders.borrow().is_held(10));
        // Replaced under the same id: the old key is let go.
        b.insert(2, keyed(30));
        holders.borrow_mut().take_released(&mut out);
        assert_eq!(out, vec![10, 20]);
        // Let go and held again before the loop looked: not released.
        b.remove(&2);
        a.insert(3, keyed(30));
        holders.borrow_mut().take_released(&mut out);
        assert!(out.is_empty());
        // A client that leaves lets go of all it held.
        drop(a);
        holders.borrow_mut().take_released(&mut out);
        assert_eq!(out, vec![30]);
        b.insert(5, keyed(40));
        b.clear();
        holders.borrow_mut().take_released(&mut out);
        assert_eq!(out, vec![40]);
        assert!(holders.borrow().is_empty());
        assert_eq!(total.get(), 0);
    }

    #[test]
    fn evict_keeps_what_it_is_told_to() {
        let mut c = StmtCache::default();
        for i in 0..5u32 {
            let s: Rc<[u8]> = Rc::from(format!("SELECT {i}").as_bytes());
            c.insert(u64::from(i), 100 + i, s, None);
        }
        assert_eq!(c.evict(|k| k == 3), 4);
        assert_eq!(c.len(), 1);
        let mut closed = c.to_close.clone();
        closed.sort_unstable();
        assert_eq!(closed, vec![100, 101, 102, 104]);
        assert!(c.close(3));
        assert!(!c.close(3));
        assert!(c.is_empty());
    }

    fn execute(id: u32, params: u16, bound: bool, types: &[u8], values: &[u8]) -> Vec<u8> {
        let mut p = vec![0x17];
        p.extend_from_slice(&id.to_le_bytes());
        p.push(0);
        p.extend_from_slice(&1u32.to_le_bytes());
        if params > 0 {
            p.extend(std::iter::repeat_n(0u8, usize::from(params).div_ceil(8)));
            p.push(u8::from(bound));
            if bound {
                p.extend_from_slice(types);
            }
            p.extend_from_slice(values);
        }
        p
    }

    #[test]
    fn rewrites_id_and_inserts_types() {
        let types = [8u8, 0, 253, 0];
        let unbound = execute(7, 2, false, &[], b"VALUES");
        let layout = execute_layout(&unbound, 2).unwrap();
        assert_eq!(
            layout,
            ExecuteLayout {
                bound_at: Some(11),
                bound: false
            }
        );
        let mut out = Vec::new();
        rewrite_execute(&mut out, &unbound, 99, layout, Some(&types));
        assert_eq!(out, execute(99, 2, true, &types, b"VALUES"));

        let bound = execute(7, 2, true, &types, b"V");
        let layout = execute_layout(&bound, 2).unwrap();
        assert_eq!(execute_types(&bound, layout, 2), Some(&types[..]));
        out.clear();
        rewrite_execute(&mut out, &bound, 5, layout, Some(&types));
        assert_eq!(out, execute(5, 2, true, &types, b"V"));

        let none = execute(1, 0, false, &[], &[]);
        let layout = execute_layout(&none, 0).unwrap();
        out.clear();
        rewrite_execute(&mut out, &none, 2, layout, None);
        assert_eq!(out, execute(2, 0, false, &[], &[]));
        assert!(execute_layout(&none[..5], 0).is_none());
        assert!(execute_layout(&none, 9).is_none());
    }

    #[test]
    fn cache_matches_text_and_schema_and_evicts() {
        let mut c = StmtCache::default();
        let sql: Rc<[u8]> = Rc::from(&b"SELECT ?"[..]);
        let k = stmt_key(0, Some("a"), &sql);
        assert_ne!(k, stmt_key(1, Some("a"), &sql), "pools do not share keys");
        c.insert(k, 1, sql.clone(), Some("a".into()));
        assert_eq!(c.get_mut(k, Some("a"), &sql).map(|e| e.id), Some(1));
        assert!(c.get_mut(k, Some("b"), &sql).is_none());
        c.insert(k, 2, sql.clone(), Some("a".into()));
        assert_eq!(c.to_close, vec![1]);
        for i in 0..BACKEND_STMT_CACHE as u32 + 1 {
            let s: Rc<[u8]> = Rc::from(format!("SELECT {i}").as_bytes());
            c.insert(stmt_key(0, None, &s), 100 + i, s, None);
        }
        assert_eq!(c.len(), BACKEND_STMT_CACHE);
        assert!(c.to_close.contains(&2));
    }

    #[test]
    fn own_keys_for_copies_and_closing() {
        let mut c = StmtCache::default();
        let sql: Rc<[u8]> = Rc::from(&b"SELECT ?"[..]);
        let k = stmt_key(0, None, &sql);
        let (k7, k8) = (own_stmt_key(k, 7), own_stmt_key(k, 8));
        assert!(k7 != k && k8 != k && k7 != k8);
        assert_eq!(own_stmt_key(k, 7), k7);
        c.insert(k, 1, sql.clone(), None);
        c.insert(k7, 2, sql.clone(), None);
        // A copy does not replace (and close) the original.
        assert!(c.to_close.is_empty());
        assert_eq!(c.get_mut(k7, None, &sql).map(|e| e.id), Some(2));
        c.close(k7);
        c.close(k7);
        assert_eq!(c.to_close, vec![2]);
        assert!(c.get_mut(k7, None, &sql).is_none());
        assert_eq!(c.get_mut(k, None, &sql).map(|e| e.id), Some(1));
    }
}
