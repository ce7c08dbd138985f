//! The Lua scripts that change the cluster's state in Redis, each atomic,
//! and the calls that run them.
//!
//! Keys: `chat:log` (the stream), `chat:msg` (the last message id),
//! `chat:sub` (events since it), `chat:online` (folded name → `node TAB
//! name TAB room`), `chat:nodes` (the nodes that joined and were not
//! reaped), `chat:node:ID` (a node's lease, holding its fencing token),
//! `chat:bans` and `chat:mutes` (folded names), `chat:batch:NODE:N` (a
//! batch's answer, for a batch sent again).

use std::sync::LazyLock;

use redis::{Connection, RedisResult, Script, Value};

use crate::server::cluster::{Cluster, DEDUPE_SECS, Pos, record};

/// What every script shares: appending to the log.
///
/// A script appends everything it logs as **one** stream entry, whatever
/// the count of events: one field, `b`, whose first line is the log's last
/// place before the entry (`MSG-SUB`) and each further line an event,
/// `KIND TAB NODE TAB UID TAB BODY` (the body a JSON object of the event's
/// fields, see [`record`](super::record), which never holds a raw newline).
/// The events' places follow from the first line: a message is the next
/// message id with `SUB` 0, any other event the next `SUB` (see
/// [`Pos::after`](super::Pos::after)). The entry's stream id is its last
/// event's place, so `XREAD` from a place returns every entry holding an
/// event after it.
///
/// One entry per batch rather than per event, and no place written per
/// event: Redis stores, logs (the AOF) and sends to every node one string
/// per batch, the nodes parse one reply value per batch, and the script
/// makes no string per event (the node sends each event's line ready-made;
/// numbers turned into strings and joined strings were most of the
/// script's time).
///
/// The log is trimmed by message id (`MINID`): it keeps the last `keep`
/// messages and the events between them, however they were batched.
const COMMON: &str = r#"
local function new_log(msg, sub)
  local log = {parts = {string.format('%d-%d', msg, sub)}, msg = msg, sub = sub, n = 0}
  function log.add(message, line)
    if message then log.msg = log.msg + 1; log.sub = 0 else log.sub = log.sub + 1 end
    log.parts[#log.parts + 1] = line
    log.n = log.n + 1
  end
  function log.add_messages(count, lines)
    log.msg = log.msg + count; log.sub = 0
    log.parts[#log.parts + 1] = lines
    log.n = log.n + count
  end
  function log.write(keep)
    if log.n == 0 then return end
    redis.call('XADD', 'chat:log', string.format('%d-%d', log.msg, log.sub), 'b', table.concat(log.parts, '\n'))
    keep = tonumber(keep)
    if keep > 0 and log.msg > keep then
      redis.call('XTRIM', 'chat:log', 'MINID', '~', string.format('%d-0', log.msg - keep))
    end
  end
  return log
end
local function counters()
  return tonumber(redis.call('GET', 'chat:msg') or '0'), tonumber(redis.call('GET', 'chat:sub') or '0')
end
local function owner_of(held)
  return string.match(held, '^([^\t]*)')
end
local function reap(node, keep, why)
  local all = redis.call('HGETALL', 'chat:online')
  local log = new_log(counters())
  for j = 1, #all, 2 do
    local owner, name = string.match(all[j + 1], '^([^\t]*)\t([^\t]*)')
    if owner == node then
      redis.call('HDEL', 'chat:online', all[j])
      log.add(false, 'quit\t' .. node .. '\t0\t' .. cjson.encode({f = name, w = why}))
    end
  end
  if log.n > 0 then redis.call('SET', 'chat:sub', log.sub) end
  log.write(keep)
  redis.call('SREM', 'chat:nodes', node)
  return log.n
end
"#;

/// Appends a batch. ARGV: node, token, batch key, keep, the last message
/// id the node has written, then per entry: kind, the count of the fields
/// the script reads, those field-value pairs, and the entry's line as
/// logged (`KIND TAB NODE TAB UID TAB BODY`); except that each run of
/// messages said in rooms comes as `says`, its count, its senders' keys
/// and its lines (each joined by newlines): the script then does nothing
/// per message unless a sender is banned or muted, and logs the lines as
/// one string (per entry, arguments and Lua's work on them were most of
/// Redis's time: 4.3 us a message at 28 a batch, 2.4 us now; 3.8 against
/// 1.4 at 100).
/// Returns the log's last place before the batch (`msg`, `sub`), then one
/// answer per entry (per run: `all` when all were appended, else an array
/// of their answers): `0` appended, `1` appended after one event the script
/// put before it (a takeover, or a dead node's quit of the name), or
/// `taken:TTL:NODE`, `refused:WHY`, `skip`; or `{'fenced'}` for the whole
/// batch (the lease is not this node's, or Redis has fewer messages than
/// the node wrote: it lost acknowledged writes, and the same ids must not
/// be given twice).
///
/// Per batch, not per entry: the counters are read once and written once,
/// a sender's ban and mute are looked up once, and the log is trimmed
/// once. Every write a script makes goes to the AOF one by one: the whole
/// batch is one XADD (see [`COMMON`]).
const APPEND: &str = r#"
local node, token, batch, keep = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local done = redis.call('GET', batch)
if done then return cjson.decode(done) end
if redis.call('GET', 'chat:node:' .. node) ~= token then return {'fenced'} end
local msg0, sub0 = counters()
if msg0 < tonumber(ARGV[5]) then return {'fenced'} end
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local banned, muted = {}, {}
local function refusal(key, say)
  local b = banned[key]
  if b == nil then
    b = redis.call('HEXISTS', 'chat:bans', key) == 1
    banned[key] = b
  end
  if b then return 'refused:banned' end
  if not say then return nil end
  local m = muted[key]
  if m == nil then
    m = redis.call('HGET', 'chat:mutes', key) or false
    muted[key] = m
  end
  if m and (m == '0' or tonumber(m) > now_ms) then return 'refused:muted' end
  return nil
end
local results = {msg0, sub0}
local log = new_log(msg0, sub0)
local i = 6
local last = #ARGV
while i <= last do
  if ARGV[i] == 'says' then
    -- A run of messages said in rooms: their count, their senders' keys and
    -- their lines (both joined by newlines). Each sender is looked up once;
    -- if none is refused the lines are logged as they came, untouched.
    local count, keys, lines = tonumber(ARGV[i + 1]), ARGV[i + 2], ARGV[i + 3]
    i = i + 4
    local refused = false
    for key in string.gmatch(keys, '[^\n]+') do
      if refusal(key, true) then refused = true; break end
    end
    if not refused then
      log.add_messages(count, lines)
      results[#results + 1] = 'all'
    else
      local each, senders, j = {}, {}, 0
      for key in string.gmatch(keys, '[^\n]+') do senders[#senders + 1] = key end
      for line in string.gmatch(lines, '[^\n]+') do
        j = j + 1
        local why = refusal(senders[j], true)
        if why then each[j] = why else each[j] = 0; log.add(true, line) end
      end
      results[#results + 1] = each
    end
  else
  local kind, n = ARGV[i], tonumber(ARGV[i + 1])
  local f = {}
  for j = 0, n - 1 do f[ARGV[i + 2 + 2 * j]] = ARGV[i + 3 + 2 * j] end
  local line = ARGV[i + 2 + 2 * n]
  i = i + 3 + 2 * n
  local result = nil
  local message = (kind == 'say' or kind == 'whisper')
  local before = nil
  if message then result = refusal(f.key, kind == 'say') end
  if kind == 'whisper' and not result and redis.call('HEXISTS', 'chat:online', f.tokey) == 0 then
    result = 'refused:gone'
  end
  if kind == 'login' then
    local held = redis.call('HGET', 'chat:online', f.key)
    if held then
      local owner = owner_of(held)
      if owner ~= node and redis.call('EXISTS', 'chat:node:' .. owner) == 1 then
        if f.take == '1' then
          before = 'takeover\t' .. node .. '\t0\t' .. cjson.encode({f = f.f, o = owner})
        else
          result = 'taken:' .. redis.call('PTTL', 'chat:node:' .. owner) .. ':' .. owner
        end
      elseif owner ~= node then
        -- A quit of a dead node's name is that node's entry.
        before = 'quit\t' .. owner .. '\t0\t' .. cjson.encode({f = f.f, w = 'gone'})
      end
    end
    if not result then
      redis.call('HSET', 'chat:online', f.key, node .. '\t' .. f.f .. '\t' .. (f.r or ''))
    end
  elseif kind == 'move' or kind == 'quit' then
    local held = redis.call('HGET', 'chat:online', f.key)
    if not held or owner_of(held) ~= node then
      result = 'skip'
    elseif kind == 'move' then
      redis.call('HSET', 'chat:online', f.key, node .. '\t' .. f.f .. '\t' .. (f.r or ''))
    else
      redis.call('HDEL', 'chat:online', f.key)
    end
  elseif kind == 'mod' then
    if f.a == 'ban' then
      redis.call('HSET', 'chat:bans', f.key, 1)
      banned[f.key] = true
    elseif f.a == 'unban' then
      redis.call('HDEL', 'chat:bans', f.key)
      banned[f.key] = false
    elseif f.a == 'mute' then
      local until_ms = 0
      if f.m ~= '' then until_ms = now_ms + tonumber(f.m) * 60000 end
      redis.call('HSET', 'chat:mutes', f.key, until_ms)
      muted[f.key] = tostring(until_ms)
    elseif f.a == 'unmute' then
      redis.call('HDEL', 'chat:mutes', f.key)
      muted[f.key] = false
    end
  end
  if not result then
    result = 0
    if before then
      log.add(false, before)
      result = 1
    end
    log.add(message, line)
  end
  results[#results + 1] = result
  end
end
log.write(keep)
if log.msg ~= msg0 then redis.call('SET', 'chat:msg', log.msg) end
if log.msg ~= msg0 or log.sub ~= sub0 then redis.call('SET', 'chat:sub', log.sub) end
redis.call('SET', batch, cjson.encode(results), 'EX', DEDUPE_SECS)
return results
"#;

/// Renews the lease. ARGV: node, token, lease ms. 1: renewed; 2: taken
/// again after it lapsed (nobody reaped the node); 0: the node was reaped.
const RENEW: &str = r#"
local key = 'chat:node:' .. ARGV[1]
local held = redis.call('GET', key)
if held == ARGV[2] then
  redis.call('PEXPIRE', key, ARGV[3])
  return 1
end
if not held and redis.call('SISMEMBER', 'chat:nodes', ARGV[1]) == 1 then
  redis.call('SET', key, ARGV[2], 'PX', ARGV[3])
  return 2
end
return 0
"#;

/// Takes a lease as a new node. ARGV: node, token, lease ms.
const REGISTER: &str = r#"
redis.call('SET', 'chat:node:' .. ARGV[1], ARGV[2], 'PX', ARGV[3])
redis.call('SADD', 'chat:nodes', ARGV[1])
return 1
"#;

/// Reaps a dead node. ARGV: the dead node, this node, its token, keep.
/// Returns the names freed, or -1 (it lives) or -2 (this node is fenced).
const REAP: &str = r#"
if redis.call('EXISTS', 'chat:node:' .. ARGV[1]) == 1 then return -1 end
if redis.call('GET', 'chat:node:' .. ARGV[2]) ~= ARGV[3] then return -2 end
return reap(ARGV[1], ARGV[4], 'gone')
"#;

/// Leaves at shutdown. ARGV: node, token, keep.
const LEAVE: &str = r#"
if redis.call('GET', 'chat:node:' .. ARGV[1]) == ARGV[2] then
  redis.call('DEL', 'chat:node:' .. ARGV[1])
end
return reap(ARGV[1], ARGV[3], '')
"#;

/// Who is online and the log's last place, at one moment.
const SNAPSHOT: &str = r#"
local last = redis.call('XREVRANGE', 'chat:log', '+', '-', 'COUNT', 1)
local id = '0-0'
if #last > 0 then id = last[1][1] end
local out = {id}
local all = redis.call('HGETALL', 'chat:online')
for j = 2, #all, 2 do out[#out + 1] = all[j] end
return out
"#;

/// A script as Redis runs it: [`COMMON`] first. Made (and hashed) once
/// each, in the statics below; the lease is renewed every second.
fn script(body: &str) -> Script {
    Script::new(&format!(
        "{COMMON}\n{}",
        body.replace("DEDUPE_SECS", &DEDUPE_SECS.to_string())
    ))
}

static APPEND_SCRIPT: LazyLock<Script> = LazyLock::new(|| script(APPEND));
static RENEW_SCRIPT: LazyLock<Script> = LazyLock::new(|| script(RENEW));
static REGISTER_SCRIPT: LazyLock<Script> = LazyLock::new(|| script(REGISTER));
static REAP_SCRIPT: LazyLock<Script> = LazyLock::new(|| script(REAP));
static LEAVE_SCRIPT: LazyLock<Script> = LazyLock::new(|| script(LEAVE));
static SNAPSHOT_SCRIPT: LazyLock<Script> = LazyLock::new(|| script(SNAPSHOT));

/// The fields the append script looks at for an entry of `kind` (bans,
/// mutes, names online); it is given no others, since every argument costs
/// Redis a string object and the script a Lua string.
fn script_reads(kind: &str) -> &'static [&'static str] {
    match kind {
        "say" => &["key"],
        "whisper" => &["key", "tokey"],
        "login" => &["key", "take", "f", "r"],
        "move" | "quit" => &["key", "f", "r"],
        "mod" => &["key", "a", "m"],
        _ => &[],
    }
}

/// One entry of a batch for [`append`].
pub struct Outgoing {
    /// The script's kind: `say`, `whisper`, `login`, `move`, `quit`, ...
    pub kind: &'static str,
    /// The request's number on this node.
    pub uid: u64,
    /// Its fields.
    pub fields: Vec<(&'static str, String)>,
}

/// The answer to one entry of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Appended at this place.
    At(Pos),
    /// A login's name is held on another node: which, and how long its
    /// lease has left (in ms).
    Taken {
        /// The node.
        node: String,
        /// Its lease's time to live.
        ttl_ms: i64,
    },
    /// Refused (banned, muted, recipient gone): why.
    Refused(String),
    /// Nothing to do (a move or quit of a name this node no longer holds).
    Skipped,
}

/// Appends a batch numbered `batch`; `None` if this node is fenced.
pub fn append(
    cluster: &Cluster,
    con: &mut Connection,
    batch: u64,
    entries: &[Outgoing],
) -> RedisResult<Option<Vec<Answer>>> {
    let mut call = APPEND_SCRIPT.prepare_invoke();
    call.arg(&cluster.node)
        .arg(&cluster.token)
        .arg(format!("chat:batch:{}:{batch}", cluster.node))
        .arg(cluster.config.keep)
        .arg(super::written());
    let mut keys = String::new();
    let mut lines = String::new();
    for run in runs(entries) {
        let entry = &run[0];
        if entry.kind == "say" {
            // A run of messages in rooms: one argument for its senders, one
            // for its lines (the script only looks up the senders).
            keys.clear();
            lines.clear();
            for (n, entry) in run.iter().enumerate() {
                if n > 0 {
                    keys.push('\n');
                    lines.push('\n');
                }
                keys.push_str(field(entry, "key"));
                lines.push_str(&record::line(
                    logged_kind(entry.kind),
                    &cluster.node,
                    entry.uid,
                    &entry.fields,
                ));
            }
            call.arg("says").arg(run.len()).arg(&keys).arg(&lines);
            continue;
        }
        let wanted = script_reads(entry.kind);
        let reads = || entry.fields.iter().filter(|(k, _)| wanted.contains(k));
        call.arg(entry.kind).arg(reads().count());
        for (k, v) in reads() {
            call.arg(*k).arg(v);
        }
        call.arg(record::line(
            logged_kind(entry.kind),
            &cluster.node,
            entry.uid,
            &entry.fields,
        ));
    }
    let answers: Value = call.invoke(con)?;
    let Value::Array(answers) = answers else {
        return Err(unexpected("not an array"));
    };
    let mut answers = answers.into_iter();
    let (start_msg, start_sub) = match (answers.next(), answers.next()) {
        (Some(Value::Int(msg)), Some(Value::Int(sub))) => (msg, sub),
        (Some(first), _) => {
            return match super::into_text(first).as_deref() {
                Some("fenced") => Ok(None),
                _ => Err(unexpected("no place to start from")),
            };
        }
        _ => return Err(unexpected("no place to start from")),
    };
    let mut pos = Pos {
        msg: u64::try_from(start_msg).map_err(|_| unexpected("a negative id"))?,
        sub: u64::try_from(start_sub).map_err(|_| unexpected("a negative id"))?,
    };
    let mut out = Vec::with_capacity(entries.len());
    for (run, answer) in runs(entries).zip(answers) {
        if run[0].kind == "say" {
            match answer {
                Value::Array(each) if each.len() == run.len() => {
                    for answer in each {
                        out.push(answer_to(&mut pos, "say", answer));
                    }
                }
                other => {
                    if super::into_text(other).as_deref() != Some("all") {
                        return Err(unexpected("no answer for a run of messages"));
                    }
                    for _ in run {
                        pos = pos.after(true);
                        out.push(Answer::At(pos));
                    }
                }
            }
        } else {
            out.push(answer_to(&mut pos, run[0].kind, answer));
        }
    }
    if out.len() != entries.len() {
        return Err(unexpected("fewer answers than entries"));
    }
    Ok(Some(out))
}

/// The entries of a batch as the script takes them: each run of messages
/// said in rooms (`say`) together, anything else alone.
fn runs(entries: &[Outgoing]) -> impl Iterator<Item = &[Outgoing]> {
    entries.chunk_by(|a, b| a.kind == "say" && b.kind == "say")
}

/// A field's value of an entry ("" if it has none).
fn field<'a>(entry: &'a Outgoing, name: &str) -> &'a str {
    entry
        .fields
        .iter()
        .find(|(k, _)| *k == name)
        .map_or("", |(_, v)| v.as_str())
}

/// What the script answered for one entry of `kind`, the log's place
/// before it at `pos` (moved on past it when it was appended).
fn answer_to(pos: &mut Pos, kind: &str, answer: Value) -> Answer {
    match answer {
        Value::Int(before) => {
            for _ in 0..before {
                *pos = pos.after(false);
            }
            *pos = pos.after(record::is_message_kind(kind));
            Answer::At(*pos)
        }
        other => {
            let text = super::into_text(other).unwrap_or_default();
            if text == "skip" {
                Answer::Skipped
            } else if let Some(held) = text.strip_prefix("taken:") {
                let (ttl, node) = held.split_once(':').unwrap_or((held, ""));
                Answer::Taken {
                    node: node.to_string(),
                    ttl_ms: ttl.parse().unwrap_or(0),
                }
            } else {
                Answer::Refused(text.strip_prefix("refused:").unwrap_or(&text).to_string())
            }
        }
    }
}

/// The kind an entry is logged as: a login that is granted is logged as
/// `online`.
fn logged_kind(kind: &'static str) -> &'static str {
    if kind == "login" { "online" } else { kind }
}

/// An answer of the append script this node cannot read.
fn unexpected(what: &str) -> redis::RedisError {
    redis::RedisError::from((
        redis::ErrorKind::UnexpectedReturnType,
        "unexpected answer from the append script",
        what.to_string(),
    ))
}

/// What [`renew`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewed {
    /// The lease holds.
    Held,
    /// It had lapsed (Redis paused or restarted), nobody reaped the node,
    /// and it is taken again.
    Retaken,
    /// The node was reaped: its names are gone.
    Reaped,
}

/// Renews the lease.
pub fn renew(cluster: &Cluster, con: &mut Connection) -> RedisResult<Renewed> {
    let answer: i64 = RENEW_SCRIPT
        .arg(&cluster.node)
        .arg(&cluster.token)
        .arg(cluster.config.lease.as_millis() as u64)
        .invoke(con)?;
    Ok(match answer {
        1 => Renewed::Held,
        2 => Renewed::Retaken,
        _ => Renewed::Reaped,
    })
}

/// Takes a lease as a new node (at start, or after being reaped).
pub fn register(cluster: &Cluster, con: &mut Connection) -> RedisResult<()> {
    let _: i64 = REGISTER_SCRIPT
        .arg(&cluster.node)
        .arg(&cluster.token)
        .arg(cluster.config.lease.as_millis() as u64)
        .invoke(con)?;
    Ok(())
}

/// Reaps `dead` if its lease is gone; the names freed (negative: none).
pub fn reap(cluster: &Cluster, con: &mut Connection, dead: &str) -> RedisResult<i64> {
    REAP_SCRIPT
        .arg(dead)
        .arg(&cluster.node)
        .arg(&cluster.token)
        .arg(cluster.config.keep)
        .invoke(con)
}

/// Gives the lease back and frees what this node still holds.
pub fn leave(cluster: &Cluster, con: &mut Connection) -> RedisResult<()> {
    let _: i64 = LEAVE_SCRIPT
        .arg(&cluster.node)
        .arg(&cluster.token)
        .arg(cluster.config.keep)
        .invoke(con)?;
    Ok(())
}

/// One user online: node, name, room (empty: the lobby).
pub type Online = (String, String, String);

/// Who is online on which node, and the log's last place, at one moment.
pub fn snapshot(con: &mut Connection) -> RedisResult<(Pos, Vec<Online>)> {
    let value: Value = SNAPSHOT_SCRIPT.invoke(con)?;
    let Value::Array(items) = value else {
        return Ok((Pos::default(), Vec::new()));
    };
    let mut items = items.into_iter().filter_map(super::into_text);
    let pos = items
        .next()
        .and_then(|id| Pos::parse(&id))
        .unwrap_or_default();
    let users = items
        .filter_map(|held| {
            let mut parts = held.splitn(3, '\t');
            Some((
                parts.next()?.to_string(),
                parts.next()?.to_string(),
                parts.next().unwrap_or("").to_string(),
            ))
        })
        .collect();
    Ok((pos, users))
}

/// The nodes that joined and were not reaped.
pub fn nodes(con: &mut Connection) -> RedisResult<Vec<String>> {
    redis::cmd("SMEMBERS").arg("chat:nodes").query(con)
}

/// Whether `node`'s lease holds.
pub fn alive(con: &mut Connection, node: &str) -> RedisResult<bool> {
    redis::cmd("EXISTS")
        .arg(format!("chat:node:{node}"))
        .query(con)
}

/// The last message id the log has given.
pub fn head(con: &mut Connection) -> RedisResult<u64> {
    Ok(redis::cmd("GET")
        .arg("chat:msg")
        .query::<Option<u64>>(con)?
        .unwrap_or(0))
}
