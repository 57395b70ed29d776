//! Rendering answers and events, for people and for scripts. Pure: no I/O,
//! the clock and time zone are passed in, so every shape is unit-tested.
//!
//! JSON field names and values are the SPEC's (§2); human output uses local
//! time and receipt marks: `✓` delivered, `✓✓` displayed, `✗` failed.

use std::borrow::Cow;
use std::fmt::Display;

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use pb::event::Kind;
use peerchat::v1 as pb;
use peerchat_core::identity::fingerprint;
use serde_json::{Value, json};

/// Joins `send`'s words with single spaces.
pub(crate) fn join_text(words: &[String]) -> String {
    words.join(" ")
}

/// The SPEC's name of a message state.
pub(crate) fn state_name(state: pb::MessageState) -> &'static str {
    match state {
        pb::MessageState::Sent => "sent",
        pb::MessageState::Delivered => "delivered",
        pb::MessageState::Displayed => "displayed",
        pb::MessageState::Failed => "failed",
        pb::MessageState::Unspecified => "unknown",
    }
}

/// The receipt mark shown after a message of ours.
pub(crate) fn state_mark(state: pb::MessageState) -> &'static str {
    match state {
        pb::MessageState::Delivered => "✓",
        pb::MessageState::Displayed => "✓✓",
        pb::MessageState::Failed => "✗",
        pb::MessageState::Sent | pb::MessageState::Unspecified => "",
    }
}

fn peer_status_name(status: pb::PeerStatus) -> &'static str {
    match status {
        pb::PeerStatus::Available => "available",
        pb::PeerStatus::Busy => "busy",
        pb::PeerStatus::Unspecified => "unknown",
    }
}

fn utc(at_ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(at_ms).unwrap_or_default()
}

/// A timestamp for JSON: RFC 3339, UTC, milliseconds
/// (`2026-11-25T10:19:00.123Z`).
pub(crate) fn rfc3339(at_ms: i64) -> String {
    utc(at_ms).to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// `[HH:MM:SS]` for live events.
fn clock<Tz: TimeZone>(at: &DateTime<Tz>) -> String
where
    Tz::Offset: Display,
{
    at.format("[%H:%M:%S]").to_string()
}

/// `[YYYY-MM-DD HH:MM:SS]` for history.
fn stamp<Tz: TimeZone>(at: &DateTime<Tz>) -> String
where
    Tz::Offset: Display,
{
    at.format("[%Y-%m-%d %H:%M:%S]").to_string()
}

/// Text from the network, made safe for a terminal: control characters
/// other than newline and tab are shown escaped, never executed.
pub(crate) fn clean(text: &str) -> Cow<'_, str> {
    escape(text, |c| acted_on(c) && c != '\n' && c != '\t')
}

/// One line from the network (a name, a reason): every control character,
/// newlines included, shown escaped, so that it stays on its line.
pub(crate) fn clean_line(text: &str) -> Cow<'_, str> {
    escape(text, |c| acted_on(c) && c != '\t')
}

/// Characters a terminal acts on rather than shows: control characters,
/// and the bidirectional embeddings, overrides and isolates, which reorder
/// the rest of the line (so that a message could show words its sender
/// never wrote in that order, or an event line look like another).
fn acted_on(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// A message's text for a terminal, as [`clean`] makes it, with every line
/// after the first indented: no line of a message can then pass for an
/// entry or event of its own (a peer writing "\n[12:00:01] bob: ..." into
/// its text).
pub(crate) fn body(text: &str) -> Cow<'_, str> {
    match clean(text) {
        Cow::Borrowed(t) if !t.contains('\n') => Cow::Borrowed(t),
        t => Cow::Owned(t.replace('\n', "\n    ")),
    }
}

fn escape(text: &str, escaped: impl Fn(char) -> bool) -> Cow<'_, str> {
    if !text.chars().any(&escaped) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if escaped(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// A short quoted reminder of a message: its first line, at most 40 chars.
pub(crate) fn snippet(text: &str) -> String {
    const MAX_CHARS: usize = 40;
    let first = clean(text.lines().next().unwrap_or_default()).into_owned();
    let more = text.lines().nth(1).is_some() || first.chars().count() > MAX_CHARS;
    let mut short: String = first.chars().take(MAX_CHARS).collect();
    if more {
        short.push('…');
    }
    format!("\"{short}\"")
}

// ---- list ----

fn is_you(peer: &pb::Peer, you: &str) -> bool {
    !you.is_empty() && peer.name.eq_ignore_ascii_case(you)
}

/// A peer's key fingerprint, or `-` where the directory lists none.
fn key_of(peer: &pb::Peer) -> String {
    if peer.public_key.is_empty() { "-".to_owned() } else { fingerprint(&peer.public_key) }
}

/// `list --json`: `[{"name","address","status","you","key"}]`.
pub(crate) fn list_json(peers: &[pb::Peer], you: &str) -> Value {
    peers
        .iter()
        .map(|p| {
            json!({
                "name": p.name,
                "address": p.address,
                "status": peer_status_name(p.status()),
                "you": is_you(p, you),
                "key": if p.public_key.is_empty() { Value::Null } else { Value::from(fingerprint(&p.public_key)) },
            })
        })
        .collect()
}

/// `list`: aligned NAME, ADDRESS, STATUS (and with `keys`, KEY) columns,
/// `(you)` after your name.
pub(crate) fn list_text(peers: &[pb::Peer], you: &str, keys: bool) -> String {
    if peers.is_empty() {
        return "nobody is online".to_owned();
    }
    let rows: Vec<[String; 4]> = peers
        .iter()
        .map(|p| {
            // From the directory, through peerd, which checks them: shown
            // escaped all the same.
            let name = clean_line(&p.name);
            let name = if is_you(p, you) { format!("{name} (you)") } else { name.into_owned() };
            let key = if keys { key_of(p) } else { String::new() };
            let address = clean_line(&p.address).into_owned();
            [name, address, peer_status_name(p.status()).to_owned(), key]
        })
        .collect();
    let key_header = if keys { "KEY" } else { "" };
    let header =
        ["NAME".to_owned(), "ADDRESS".to_owned(), "STATUS".to_owned(), key_header.to_owned()];
    let width = |col: usize| {
        rows.iter()
            .chain(std::iter::once(&header))
            .map(|r| r[col].chars().count())
            .max()
            .unwrap_or(0)
    };
    let (w0, w1, w2) = (width(0), width(1), width(2));
    let mut lines: Vec<String> = std::iter::once(&header)
        .chain(&rows)
        .map(|[name, address, status, key]| {
            if keys {
                format!("{name:<w0$}  {address:<w1$}  {status:<w2$}  {key}")
            } else {
                format!("{name:<w0$}  {address:<w1$}  {status}")
            }
        })
        .collect();
    if peers.iter().all(|p| is_you(p, you)) {
        lines.push("nobody else is online".to_owned());
    }
    lines.join("\n")
}

// ---- status ----

/// `status --json`; an empty `peer` or `directory_error` becomes `null`.
pub(crate) fn status_json(s: &pb::GetStatusResponse) -> Value {
    let or_null = |v: &str| if v.is_empty() { Value::Null } else { Value::from(v) };
    json!({
        "name": s.name,
        "listen": s.listen,
        "advertise": s.advertise,
        "directory": s.directory,
        "directory_state": s.directory_state,
        "directory_error": or_null(&s.directory_error),
        "peer": or_null(&s.peer),
        "conversation": s.conversation,
        "pid": s.pid,
        "unacknowledged": s.unacknowledged,
        "data_dir": s.data_dir,
        "key": s.key,
        "accept": s.accept,
        "requests": s.requests.iter()
            .map(|r| json!({ "peer": r.peer, "expires": rfc3339(r.expires_at_ms) }))
            .collect::<Vec<_>>(),
    })
}

/// `status`: aligned `key: value` lines.
pub(crate) fn status_text(s: &pb::GetStatusResponse) -> String {
    let or = |value: &str, missing: &str| {
        if value.is_empty() { missing.to_owned() } else { value.to_owned() }
    };
    let requests = s
        .requests
        .iter()
        .map(|r| {
            format!(
                "{} (until {})",
                clean(&r.peer),
                clock(&utc(r.expires_at_ms).with_timezone(&chrono::Local))
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    // Said only when there is something to say.
    let directory_error =
        (!s.directory_error.is_empty()).then(|| ("directory error", s.directory_error.clone()));
    let rows = [
        Some(("name", or(&s.name, "-"))),
        Some(("pid", s.pid.to_string())),
        Some(("listen", or(&s.listen, "-"))),
        Some(("advertise", or(&s.advertise, "(not registered)"))),
        Some(("directory", or(&s.directory, "-"))),
        Some(("directory state", or(&s.directory_state, "-"))),
        directory_error,
        Some(("conversation", or(&s.conversation, "-"))),
        Some(("peer", or(&s.peer, "(none)"))),
        Some(("unacknowledged", s.unacknowledged.to_string())),
        Some(("data dir", or(&s.data_dir, "-"))),
        Some(("key", or(&s.key, "-"))),
        Some(("accept", or(&s.accept, "all"))),
        Some(("requests", or(&requests, "(none)"))),
    ];
    let rows: Vec<_> = rows.into_iter().flatten().collect();
    let width = rows.iter().map(|(key, _)| key.len() + 1).max().unwrap_or(0);
    // Some values come from the network (the advertised address is the
    // directory's word): each stays on its line, escaped.
    rows.iter()
        .map(|(key, value)| format!("{:<width$} {}", format!("{key}:"), clean_line(value)))
        .collect::<Vec<_>>()
        .join("\n")
}

// ---- ping ----

fn ms(d: &std::time::Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// One ping: `pong from bob: seq=1 time=0.412 ms`.
pub(crate) fn ping_text(peer: &str, seq: u32, rtt: std::time::Duration) -> String {
    format!("pong from {peer}: seq={seq} time={:.3} ms", ms(&rtt))
}

fn ping_stats(rtts: &[std::time::Duration]) -> (f64, f64, f64) {
    let min = rtts.iter().map(ms).fold(f64::INFINITY, f64::min);
    let max = rtts.iter().map(ms).fold(0.0, f64::max);
    let avg =
        if rtts.is_empty() { 0.0 } else { rtts.iter().map(ms).sum::<f64>() / rtts.len() as f64 };
    (if rtts.is_empty() { 0.0 } else { min }, avg, max)
}

/// The closing line: `4 pings to bob: min/avg/max = 0.301/0.412/0.633 ms`.
pub(crate) fn ping_summary(peer: &str, rtts: &[std::time::Duration]) -> String {
    let (min, avg, max) = ping_stats(rtts);
    format!("{} pings to {peer}: min/avg/max = {min:.3}/{avg:.3}/{max:.3} ms", rtts.len())
}

/// `ping --json`: `{"peer","count","rtt_ms":[...],"min_ms","avg_ms","max_ms"}`.
pub(crate) fn ping_json(peer: &str, rtts: &[std::time::Duration]) -> Value {
    // To the microsecond, which is what the daemon measures.
    let us = |x: f64| (x * 1000.0).round() / 1000.0;
    let (min, avg, max) = ping_stats(rtts);
    json!({
        "peer": peer,
        "count": rtts.len(),
        "rtt_ms": rtts.iter().map(|r| us(ms(r))).collect::<Vec<_>>(),
        "min_ms": us(min), "avg_ms": us(avg), "max_ms": us(max),
    })
}

// ---- trust ----

/// `trust --json`: `{"peer","key","previous"}` (`previous` null if none).
pub(crate) fn trust_json(t: &pb::TrustResponse) -> Value {
    json!({
        "peer": t.peer,
        "key": t.key,
        "previous": if t.previous.is_empty() { Value::Null } else { Value::from(t.previous.as_str()) },
    })
}

/// `trust`: what is trusted now, and what it replaced (nothing, when the
/// key was the one known already).
pub(crate) fn trust_text(t: &pb::TrustResponse) -> String {
    if t.previous.is_empty() {
        format!("trusting {}'s key {}", t.peer, t.key)
    } else if t.previous == t.key {
        format!("{}'s key {} was trusted already; nothing changed", t.peer, t.key)
    } else {
        format!("trusting {}'s key {} (in place of {})", t.peer, t.key, t.previous)
    }
}

// ---- block, unblock, blocked ----

/// `block --json`: `{"peer", "already", "disconnected"}`.
pub(crate) fn block_json(b: &pb::BlockResponse) -> Value {
    json!({ "peer": b.peer, "already": b.already, "disconnected": b.disconnected })
}

/// `block`: what changed.
pub(crate) fn block_text(b: &pb::BlockResponse) -> String {
    let mut line = if b.already {
        format!("{} was already blocked", b.peer)
    } else {
        format!("blocked {}", b.peer)
    };
    if b.disconnected {
        line.push_str(" (the conversation with them is ending)");
    }
    line
}

/// `unblock --json`: `{"peer", "was_blocked"}`.
pub(crate) fn unblock_json(u: &pb::UnblockResponse) -> Value {
    json!({ "peer": u.peer, "was_blocked": !u.was_not_blocked })
}

pub(crate) fn unblock_text(u: &pb::UnblockResponse) -> String {
    if u.was_not_blocked {
        format!("{} was not blocked", u.peer)
    } else {
        format!("unblocked {}", u.peer)
    }
}

/// `blocked --json`: `{"blocked": [names]}`.
pub(crate) fn blocked_json(b: &pb::ListBlockedResponse) -> Value {
    json!({ "blocked": b.names })
}

/// `blocked`: one name per line, or a line that says there are none.
pub(crate) fn blocked_text(b: &pb::ListBlockedResponse) -> String {
    if b.names.is_empty() {
        return "nobody is blocked".to_owned();
    }
    b.names.iter().map(|n| clean(n)).collect::<Vec<_>>().join("\n")
}

// ---- connect, disconnect, send ----

/// `connect --json` and `disconnect --json`: `{"peer"}`.
pub(crate) fn peer_json(peer: &str) -> Value {
    json!({ "peer": peer })
}

/// `send --json`: `{"id","state"}`.
pub(crate) fn send_json(r: &pb::SendResponse) -> Value {
    json!({ "id": r.id, "state": state_name(r.state()) })
}

/// `send`: `delivered <id>`.
pub(crate) fn send_text(r: &pb::SendResponse) -> String {
    format!("{} {}", state_name(r.state()), r.id)
}

// ---- history ----

fn direction_name(d: pb::Direction) -> &'static str {
    match d {
        pb::Direction::In => "in",
        pb::Direction::Out => "out",
        pb::Direction::Unspecified => "unknown",
    }
}

/// `history --json`: `[{"id","direction","peer","text","at","state"}]`,
/// in the daemon's order (oldest first).
pub(crate) fn history_json(entries: &[pb::HistoryEntry]) -> Value {
    entries
        .iter()
        .map(|e| {
            json!({
                "id": e.id,
                "direction": direction_name(e.direction()),
                "peer": e.peer,
                "text": e.text,
                "at": rfc3339(e.at_ms),
                "state": state_name(e.state()),
            })
        })
        .collect()
}

/// `history`: one line per message, local date and time, marks on ours.
pub(crate) fn history_text<Tz: TimeZone>(h: &pb::GetHistoryResponse, tz: &Tz) -> String
where
    Tz::Offset: Display,
{
    if h.entries.is_empty() {
        return if h.peer.is_empty() {
            "no conversations yet".to_owned()
        } else {
            format!("no messages with {}", h.peer)
        };
    }
    h.entries
        .iter()
        .map(|e| {
            let at = stamp(&utc(e.at_ms).with_timezone(tz));
            let text = body(&e.text);
            match e.direction() {
                pb::Direction::Out => {
                    let mark = state_mark(e.state());
                    let sep = if mark.is_empty() { "" } else { " " };
                    format!("{at} you → {}: {text}{sep}{mark}", e.peer)
                }
                _ => format!("{at} {}: {text}", e.peer),
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

// ---- events (watch, chat) ----

/// One `watch --json` line; `None` for an event kind this build does not know.
pub(crate) fn event_json(event: &pb::Event) -> Option<Value> {
    Some(match event.kind.as_ref()? {
        Kind::Message(m) => {
            let mut message = json!({
                "event": "message", "id": m.id, "from": m.from, "text": m.text, "at": rfc3339(m.at_ms),
            });
            // Only when set: replayed on attaching, not yet reported shown.
            if m.waited {
                message["waited"] = Value::Bool(true);
            }
            message
        }
        Kind::Receipt(r) => json!({
            "event": "receipt", "id": r.id, "state": state_name(r.state()), "peer": r.peer,
        }),
        Kind::Connected(c) => json!({ "event": "connected", "peer": c.peer }),
        Kind::Disconnected(d) => {
            json!({ "event": "disconnected", "peer": d.peer, "reason": d.reason })
        }
        Kind::Failed(f) => {
            json!({ "event": "failed", "id": f.id, "reason": f.reason, "peer": f.peer })
        }
        Kind::LinkLost(l) => json!({ "event": "link_lost", "peer": l.peer, "reason": l.reason }),
        Kind::Resumed(r) => json!({ "event": "resumed", "peer": r.peer }),
        Kind::PeerOnline(o) => listing_json("peer_online", o.peer.as_ref(), o.you),
        Kind::PeerStatus(s) => listing_json("peer_status", s.peer.as_ref(), s.you),
        Kind::PeerOffline(o) => json!({ "event": "peer_offline", "name": o.name, "you": o.you }),
        Kind::PeersSynced(_) => json!({ "event": "synced" }),
        Kind::Request(r) => {
            json!({ "event": "request", "peer": r.peer, "expires": rfc3339(r.expires_at_ms) })
        }
        Kind::RequestEnded(r) => json!({
            "event": "request_ended", "peer": r.peer, "outcome": outcome_name(r.outcome()),
        }),
        Kind::Asking(a) => {
            json!({ "event": "asking", "peer": a.peer, "expires": rfc3339(a.expires_at_ms) })
        }
        Kind::ConnectFailed(f) => {
            json!({ "event": "connect_failed", "peer": f.peer, "reason": f.reason })
        }
        Kind::Unshown(u) => json!({ "event": "unshown", "peer": u.peer, "count": u.count }),
    })
}

/// Messages let go unshown (see `UnshownEvent`): what `watch`, chat and
/// the TUI say.
pub(crate) fn unshown_text(peer: &str, count: u32) -> String {
    let peer = clean(peer);
    let (messages, were) = if count == 1 { ("message", "was") } else { ("messages", "were") };
    // No name: senders past the ones peerd counts by name.
    let (from, history) = if peer.is_empty() {
        ("other peers".to_owned(), "NAME".to_owned())
    } else {
        (peer.to_string(), peer.to_string())
    };
    format!(
        "{count} earlier {messages} from {from} {were} not kept to be shown here (more waited \
         than peerd keeps); `chatctl history {history}` has them"
    )
}

/// Our dial waits for the peer's user: what `watch` and the TUI say.
pub(crate) fn asking_text(peer: &str) -> String {
    asking_with(peer, "`chatctl disconnect` gives up")
}

/// [`asking_text`] in the full-screen chat, where `/disconnect` gives up.
pub(crate) fn tui_asking_text(peer: &str) -> String {
    asking_with(peer, "/disconnect gives up")
}

/// [`asking_text`] for the `chatctl connect` that waits: interrupting it
/// gives up too.
pub(crate) fn connect_asking_text(peer: &str) -> String {
    asking_with(peer, "Ctrl-C or `chatctl disconnect` gives up")
}

fn asking_with(peer: &str, giving_up: &str) -> String {
    let peer = clean(peer);
    let within = peerchat_core::timeouts::ASK_TIMEOUT.as_secs();
    format!("waiting for {peer} to accept (up to {within} s; {giving_up})")
}

/// A request's end as `watch --json` spells it.
pub(crate) fn outcome_name(o: pb::request_ended_event::Outcome) -> &'static str {
    use pb::request_ended_event::Outcome;
    match o {
        Outcome::Accepted => "accepted",
        Outcome::Rejected => "rejected",
        Outcome::Expired => "expired",
        Outcome::Withdrawn => "withdrawn",
        Outcome::Unspecified => "unknown",
    }
}

/// `peer_online` and `peer_status`: the listing as `list --json` has it,
/// with the event's name.
fn listing_json(event: &str, peer: Option<&pb::Peer>, you: bool) -> Value {
    let none = pb::Peer::default();
    let p = peer.unwrap_or(&none);
    json!({
        "event": event,
        "name": p.name,
        "address": p.address,
        "status": peer_status_name(p.status()),
        "you": you,
        "key": if p.public_key.is_empty() { Value::Null } else { Value::from(fingerprint(&p.public_key)) },
    })
}

/// `bob 10.0.0.7:4000 busy`, `(you)` after your name: a presence line's
/// listing.
fn listing_text(peer: Option<&pb::Peer>, you: bool) -> String {
    let none = pb::Peer::default();
    let p = peer.unwrap_or(&none);
    format!(
        "{}{} {} {}",
        clean(&p.name),
        you_mark(you),
        clean(&p.address),
        peer_status_name(p.status())
    )
}

fn you_mark(you: bool) -> &'static str {
    if you { " (you)" } else { "" }
}

/// One event for people. Messages carry their own time; other events are
/// stamped `now`. `label` names a message of ours (chat passes a snippet
/// of its text; the id is used otherwise).
pub(crate) fn event_text<Tz: TimeZone>(
    event: &pb::Event,
    now: &DateTime<Tz>,
    label: &dyn Fn(&str) -> Option<String>,
) -> Option<String>
where
    Tz::Offset: Display,
{
    let name = |id: &str| label(id).unwrap_or_else(|| id.to_owned());
    let at = clock(now);
    Some(match event.kind.as_ref()? {
        Kind::Message(m) => {
            let at = clock(&utc(m.at_ms).with_timezone(&now.timezone()));
            format!("{at} {}: {}", m.from, body(&m.text))
        }
        Kind::Receipt(r) => {
            let state = r.state();
            format!("{at} {} {} {}", state_mark(state), state_name(state), name(&r.id))
        }
        Kind::Connected(c) => format!("{at} * connected to {}", c.peer),
        Kind::Disconnected(d) if d.reason.is_empty() => {
            format!("{at} * disconnected from {}", d.peer)
        }
        Kind::Disconnected(d) => {
            format!("{at} * disconnected from {} ({})", d.peer, clean_line(&d.reason))
        }
        Kind::Failed(f) if f.reason.is_empty() => format!("{at} ✗ message {} failed", name(&f.id)),
        Kind::Failed(f) => {
            format!("{at} ✗ message {} failed: {}", name(&f.id), clean_line(&f.reason))
        }
        Kind::LinkLost(l) => {
            format!("{at} * link to {} lost, reconnecting ({})", l.peer, clean_line(&l.reason))
        }
        Kind::Resumed(r) => format!("{at} * back with {}", r.peer),
        Kind::PeerOnline(o) => format!("{at} + {}", listing_text(o.peer.as_ref(), o.you)),
        Kind::PeerStatus(s) => format!("{at} ~ {}", listing_text(s.peer.as_ref(), s.you)),
        Kind::PeerOffline(o) => format!("{at} - {}{} offline", clean(&o.name), you_mark(o.you)),
        // The end of `list --watch`'s first list: shown as the list itself.
        Kind::PeersSynced(_) => return None,
        Kind::Request(r) => format!(
            "{at} ? {} asks to talk (chatctl accept {} / chatctl reject {})",
            clean(&r.peer),
            clean(&r.peer),
            clean(&r.peer)
        ),
        Kind::RequestEnded(r) => {
            format!("{at} * request from {} {}", clean(&r.peer), outcome_name(r.outcome()))
        }
        Kind::Asking(a) => format!("{at} * {}", asking_text(&a.peer)),
        Kind::ConnectFailed(f) => {
            format!("{at} * could not connect to {}: {}", clean(&f.peer), clean_line(&f.reason))
        }
        Kind::Unshown(u) => format!("{at} * {}", unshown_text(&u.peer, u.count)),
    })
}

/// The echo of a line sent from `chat`.
pub(crate) fn sent_text<Tz: TimeZone>(text: &str, now: &DateTime<Tz>) -> String
where
    Tz::Offset: Display,
{
    format!("{} you: {}", clock(now), body(text))
}

/// The JSON echo of a line sent from `chat` (an extra event kind).
pub(crate) fn sent_json(id: &str, text: &str, at_ms: i64) -> Value {
    json!({ "event": "sent", "id": id, "text": text, "at": rfc3339(at_ms) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::FixedOffset;

    const AT: i64 = 1_795_601_940_123; // 2026-11-25T10:19:00.123Z

    fn peer(name: &str, address: &str, status: pb::PeerStatus) -> pb::Peer {
        pb::Peer {
            name: name.into(),
            address: address.into(),
            status: status as i32,
            public_key: vec![7; 32],
        }
    }

    fn event(kind: Kind) -> pb::Event {
        pb::Event { kind: Some(kind) }
    }

    fn now() -> DateTime<Utc> {
        utc(AT + 2000)
    }

    fn no_label(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn messages_let_go_unshown_are_said_in_text_and_json() {
        let unshown = event(Kind::Unshown(pb::UnshownEvent { peer: "alice".into(), count: 3 }));
        assert_eq!(
            event_json(&unshown),
            Some(json!({ "event": "unshown", "peer": "alice", "count": 3 }))
        );
        let text = event_text(&unshown, &now(), &no_label).expect("a line");
        assert!(
            text.ends_with(
                "* 3 earlier messages from alice were not kept to be shown here (more waited \
                 than peerd keeps); `chatctl history alice` has them"
            ),
            "{text}"
        );
        assert!(unshown_text("bob", 1).starts_with("1 earlier message from bob was not kept"));
        let others = unshown_text("", 5);
        assert!(others.starts_with("5 earlier messages from other peers were"), "{others}");
        assert!(others.ends_with("`chatctl history NAME` has them"), "{others}");
    }

    #[test]
    fn text_words_join_with_single_spaces() {
        let words = ["hello".to_owned(), "-x".to_owned(), "".to_owned(), "world".to_owned()];
        assert_eq!(join_text(&words[..2]), "hello -x");
        assert_eq!(join_text(&words), "hello -x  world");
        assert_eq!(join_text(&[]), "");
    }

    #[test]
    fn timestamps_are_utc_rfc3339_with_millis() {
        assert_eq!(rfc3339(AT), "2026-11-25T10:19:00.123Z");
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn list_json_has_the_spec_fields() {
        let peers = [
            peer("Alice", "10.0.0.5:4000", pb::PeerStatus::Available),
            peer("bob", "10.0.0.6:4001", pb::PeerStatus::Busy),
        ];
        let key = peerchat_core::identity::fingerprint(&[7; 32]);
        assert_eq!(
            list_json(&peers, "alice"),
            json!([
                {"name": "Alice", "address": "10.0.0.5:4000", "status": "available", "you": true, "key": key},
                {"name": "bob", "address": "10.0.0.6:4001", "status": "busy", "you": false, "key": key},
            ])
        );
        assert_eq!(list_json(&[], "alice"), json!([]));
        let keyless = pb::Peer { public_key: vec![], ..peers[0].clone() };
        assert_eq!(list_json(&[keyless], "x")[0]["key"], Value::Null);
        let table = list_text(&peers, "alice", true);
        assert!(table.lines().next().is_some_and(|h| h.ends_with("KEY")), "{table}");
        assert!(table.contains(&key), "{table}");
    }

    #[test]
    fn ping_lines_and_summary() {
        use std::time::Duration;
        let rtts = [Duration::from_micros(300), Duration::from_micros(500)];
        assert_eq!(ping_text("bob", 1, rtts[0]), "pong from bob: seq=1 time=0.300 ms");
        assert_eq!(
            ping_summary("bob", &rtts),
            "2 pings to bob: min/avg/max = 0.300/0.400/0.500 ms"
        );
        let j = ping_json("bob", &rtts);
        assert_eq!(j["count"], 2);
        assert_eq!(j["max_ms"], 0.5);
    }

    #[test]
    fn list_text_aligns_columns_and_marks_you() {
        let peers = [
            peer("alice", "10.0.0.5:4000", pb::PeerStatus::Available),
            peer("bob", "192.168.100.200:40000", pb::PeerStatus::Busy),
        ];
        assert_eq!(
            list_text(&peers, "ALICE", false),
            "NAME         ADDRESS                STATUS\n\
             alice (you)  10.0.0.5:4000          available\n\
             bob          192.168.100.200:40000  busy"
        );
    }

    #[test]
    fn list_and_status_text_show_the_directorys_words_escaped() {
        let forged = [peer("bob", "1.2.3.4:5\u{1b}[2J\nmallory", pb::PeerStatus::Available)];
        let text = list_text(&forged, "alice", false);
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(text.contains("1.2.3.4:5\\u{1b}[2J\\nmallory"), "{text}");
        let status = pb::GetStatusResponse { advertise: "\u{1b}[31mRED\nx".into(), ..status("") };
        let text = status_text(&status);
        assert!(text.contains("advertise:       \\u{1b}[31mRED\\nx\n"), "{text}");
    }

    #[test]
    fn list_text_says_when_nobody_else_is_online() {
        assert_eq!(list_text(&[], "alice", false), "nobody is online");
        let alone = [peer("alice", "1.2.3.4:5", pb::PeerStatus::Available)];
        assert_eq!(
            list_text(&alone, "alice", false),
            "NAME         ADDRESS    STATUS\nalice (you)  1.2.3.4:5  available\nnobody else is online"
        );
    }

    fn status(peer: &str) -> pb::GetStatusResponse {
        pb::GetStatusResponse {
            name: "alice".into(),
            listen: "0.0.0.0:4000".into(),
            advertise: "10.0.0.5:4000".into(),
            directory: "http://127.0.0.1:7300".into(),
            directory_state: "registered".into(),
            peer: peer.into(),
            conversation: if peer.is_empty() { "idle" } else { "connected" }.into(),
            pid: 42,
            unacknowledged: 1,
            data_dir: "/d".into(),
            key: "ABCD-EFGH".into(),
            accept: "all".into(),
            requests: Vec::new(),
            directory_error: String::new(),
        }
    }

    #[test]
    fn status_json_has_the_spec_fields_and_null_peer() {
        assert_eq!(
            status_json(&status("")),
            json!({
                "name": "alice", "listen": "0.0.0.0:4000", "advertise": "10.0.0.5:4000",
                "directory": "http://127.0.0.1:7300", "directory_state": "registered",
                "directory_error": null, "peer": null,
                "conversation": "idle", "pid": 42, "unacknowledged": 1, "data_dir": "/d",
                "key": "ABCD-EFGH", "accept": "all", "requests": [],
            })
        );
        assert_eq!(status_json(&status("bob"))["peer"], json!("bob"));
        let refused = pb::GetStatusResponse {
            directory_state: "refused".into(),
            directory_error: "quota of new names used up".into(),
            ..status("")
        };
        assert_eq!(status_json(&refused)["directory_error"], json!("quota of new names used up"));
    }

    #[test]
    fn status_text_says_why_the_directory_is_not_registered_on_one_line() {
        let away = pb::GetStatusResponse {
            directory_state: "unreachable".into(),
            directory_error: "no answer\n[12:00:00] bob: forged".into(),
            ..status("")
        };
        let text = status_text(&away);
        assert!(
            text.contains("directory state: unreachable\ndirectory error: no answer\\n[12:00:00]"),
            "{text}"
        );
    }

    #[test]
    fn status_text_is_aligned_key_value_lines() {
        assert_eq!(
            status_text(&status("")),
            "name:            alice\n\
             pid:             42\n\
             listen:          0.0.0.0:4000\n\
             advertise:       10.0.0.5:4000\n\
             directory:       http://127.0.0.1:7300\n\
             directory state: registered\n\
             conversation:    idle\n\
             peer:            (none)\n\
             unacknowledged:  1\n\
             data dir:        /d\n\
             key:             ABCD-EFGH\n\
             accept:          all\n\
             requests:        (none)"
        );
    }

    #[test]
    fn send_and_peer_shapes() {
        let r = pb::SendResponse {
            id: "m1".into(),
            state: pb::MessageState::Delivered as i32,
            link_rtt_us: 0,
        };
        assert_eq!(send_json(&r), json!({"id": "m1", "state": "delivered"}));
        assert_eq!(send_text(&r), "delivered m1");
        let r = pb::SendResponse {
            id: "m2".into(),
            state: pb::MessageState::Sent as i32,
            link_rtt_us: 0,
        };
        assert_eq!(send_json(&r), json!({"id": "m2", "state": "sent"}));
        assert_eq!(peer_json("bob"), json!({"peer": "bob"}));
    }

    fn entry(
        id: &str,
        direction: pb::Direction,
        text: &str,
        state: pb::MessageState,
    ) -> pb::HistoryEntry {
        pb::HistoryEntry {
            id: id.into(),
            direction: direction as i32,
            peer: "bob".into(),
            text: text.into(),
            at_ms: AT,
            state: state as i32,
        }
    }

    #[test]
    fn history_json_has_the_spec_fields() {
        let entries = [
            entry("a", pb::Direction::Out, "hi", pb::MessageState::Displayed),
            entry("b", pb::Direction::In, "yo", pb::MessageState::Delivered),
        ];
        assert_eq!(
            history_json(&entries),
            json!([
                {"id": "a", "direction": "out", "peer": "bob", "text": "hi", "at": "2026-11-25T10:19:00.123Z", "state": "displayed"},
                {"id": "b", "direction": "in", "peer": "bob", "text": "yo", "at": "2026-11-25T10:19:00.123Z", "state": "delivered"},
            ])
        );
    }

    #[test]
    fn history_text_uses_local_time_and_marks() {
        let tz = FixedOffset::east_opt(2 * 3600).expect("valid offset");
        let h = pb::GetHistoryResponse {
            peer: "bob".into(),
            entries: vec![
                entry("a", pb::Direction::Out, "hi", pb::MessageState::Displayed),
                entry("b", pb::Direction::In, "yo\u{1b}[2J", pb::MessageState::Delivered),
                entry("c", pb::Direction::Out, "lost", pb::MessageState::Failed),
                entry("d", pb::Direction::Out, "pending", pb::MessageState::Sent),
            ],
            older: 0,
        };
        assert_eq!(
            history_text(&h, &tz),
            "[2026-11-25 12:19:00] you → bob: hi ✓✓\n\
             [2026-11-25 12:19:00] bob: yo\\u{1b}[2J\n\
             [2026-11-25 12:19:00] you → bob: lost ✗\n\
             [2026-11-25 12:19:00] you → bob: pending"
        );
        let empty = pb::GetHistoryResponse { peer: "bob".into(), entries: vec![], older: 0 };
        assert_eq!(history_text(&empty, &tz), "no messages with bob");
    }

    fn all_events() -> Vec<pb::Event> {
        vec![
            event(Kind::Message(pb::MessageEvent {
                id: "m".into(),
                from: "bob".into(),
                text: "hi".into(),
                at_ms: AT,
                waited: false,
            })),
            event(Kind::Receipt(pb::ReceiptEvent {
                id: "o".into(),
                state: pb::MessageState::Delivered as i32,
                peer: "bob".into(),
            })),
            event(Kind::Receipt(pb::ReceiptEvent {
                id: "o".into(),
                state: pb::MessageState::Displayed as i32,
                peer: "bob".into(),
            })),
            event(Kind::Connected(pb::ConnectedEvent { peer: "bob".into() })),
            event(Kind::Disconnected(pb::DisconnectedEvent {
                peer: "bob".into(),
                reason: "bob left".into(),
            })),
            event(Kind::Failed(pb::FailedEvent {
                id: "o".into(),
                reason: "link lost".into(),
                peer: "bob".into(),
            })),
            event(Kind::LinkLost(pb::LinkLostEvent { peer: "bob".into(), reason: "reset".into() })),
            event(Kind::Resumed(pb::ResumedEvent { peer: "bob".into() })),
            event(Kind::PeerOnline(pb::PeerOnlineEvent {
                peer: Some(peer("carol", "10.0.0.7:4000", pb::PeerStatus::Available)),
                you: false,
            })),
            event(Kind::PeerStatus(pb::PeerStatusEvent {
                peer: Some(peer("alice", "10.0.0.5:4000", pb::PeerStatus::Busy)),
                you: true,
            })),
            event(Kind::PeerOffline(pb::PeerOfflineEvent { name: "carol".into(), you: false })),
            event(Kind::ConnectFailed(pb::ConnectFailedEvent {
                peer: "dave".into(),
                reason: "dave did not accept".into(),
            })),
        ]
    }

    #[test]
    fn trust_says_what_it_replaced_or_that_nothing_changed() {
        let t = |previous: &str| pb::TrustResponse {
            peer: "bob".into(),
            key: "K2".into(),
            previous: previous.into(),
        };
        assert_eq!(trust_text(&t("")), "trusting bob's key K2");
        assert_eq!(trust_text(&t("K1")), "trusting bob's key K2 (in place of K1)");
        assert_eq!(trust_text(&t("K2")), "bob's key K2 was trusted already; nothing changed");
    }

    #[test]
    fn each_place_says_how_to_give_up_waiting_there() {
        let within = peerchat_core::timeouts::ASK_TIMEOUT.as_secs();
        let says = |text: String, how: &str| {
            assert_eq!(
                text,
                format!("waiting for bob to accept (up to {within} s; {how} gives up)")
            );
        };
        says(asking_text("bob"), "`chatctl disconnect`");
        says(connect_asking_text("bob"), "Ctrl-C or `chatctl disconnect`");
        says(tui_asking_text("bob"), "/disconnect");
    }

    #[test]
    fn event_json_has_the_spec_fields() {
        let lines: Vec<Value> = all_events().iter().filter_map(event_json).collect();
        assert_eq!(
            lines,
            [
                json!({"event": "message", "id": "m", "from": "bob", "text": "hi", "at": "2026-11-25T10:19:00.123Z"}),
                json!({"event": "receipt", "id": "o", "state": "delivered", "peer": "bob"}),
                json!({"event": "receipt", "id": "o", "state": "displayed", "peer": "bob"}),
                json!({"event": "connected", "peer": "bob"}),
                json!({"event": "disconnected", "peer": "bob", "reason": "bob left"}),
                json!({"event": "failed", "id": "o", "reason": "link lost", "peer": "bob"}),
                json!({"event": "link_lost", "peer": "bob", "reason": "reset"}),
                json!({"event": "resumed", "peer": "bob"}),
                json!({"event": "peer_online", "name": "carol", "address": "10.0.0.7:4000",
                       "status": "available", "you": false, "key": fingerprint(&[7; 32])}),
                json!({"event": "peer_status", "name": "alice", "address": "10.0.0.5:4000",
                       "status": "busy", "you": true, "key": fingerprint(&[7; 32])}),
                json!({"event": "peer_offline", "name": "carol", "you": false}),
                json!({"event": "connect_failed", "peer": "dave", "reason": "dave did not accept"}),
            ]
        );
        let synced = event(Kind::PeersSynced(pb::PeersSyncedEvent {}));
        assert_eq!(event_json(&synced), Some(json!({"event": "synced"})));
        assert_eq!(event_json(&pb::Event { kind: None }), None);
        // One line each: serde_json's compact form never breaks lines.
        let text = event_json(&all_events()[0]).map(|v| v.to_string()).unwrap_or_default();
        assert!(!text.contains('\n'));
    }

    #[test]
    fn event_text_for_people() {
        let lines: Vec<String> =
            all_events().iter().filter_map(|e| event_text(e, &now(), &no_label)).collect();
        assert_eq!(
            lines,
            [
                "[10:19:00] bob: hi",
                "[10:19:02] ✓ delivered o",
                "[10:19:02] ✓✓ displayed o",
                "[10:19:02] * connected to bob",
                "[10:19:02] * disconnected from bob (bob left)",
                "[10:19:02] ✗ message o failed: link lost",
                "[10:19:02] * link to bob lost, reconnecting (reset)",
                "[10:19:02] * back with bob",
                "[10:19:02] + carol 10.0.0.7:4000 available",
                "[10:19:02] ~ alice (you) 10.0.0.5:4000 busy",
                "[10:19:02] - carol offline",
                "[10:19:02] * could not connect to dave: dave did not accept",
            ]
        );
        let synced = event(Kind::PeersSynced(pb::PeersSyncedEvent {}));
        assert_eq!(event_text(&synced, &now(), &no_label), None);
        let label = |id: &str| (id == "o").then(|| snippet("hello there"));
        let receipt = &all_events()[1];
        assert_eq!(
            event_text(receipt, &now(), &label).as_deref(),
            Some("[10:19:02] ✓ delivered \"hello there\"")
        );
        let quiet = event(Kind::Disconnected(pb::DisconnectedEvent {
            peer: "bob".into(),
            reason: String::new(),
        }));
        assert_eq!(
            event_text(&quiet, &now(), &no_label).as_deref(),
            Some("[10:19:02] * disconnected from bob")
        );
    }

    #[test]
    fn chat_echo_shapes() {
        assert_eq!(sent_text("hi", &now()), "[10:19:02] you: hi");
        assert_eq!(
            sent_json("m", "hi", AT),
            json!({"event": "sent", "id": "m", "text": "hi", "at": "2026-11-25T10:19:00.123Z"})
        );
    }

    #[test]
    fn snippets_are_short_and_safe() {
        assert_eq!(snippet("hi"), "\"hi\"");
        assert_eq!(snippet("one\ntwo"), "\"one…\"");
        assert_eq!(snippet(&"x".repeat(50)), format!("\"{}…\"", "x".repeat(40)));
        assert_eq!(clean("a\u{7}b\tc"), "a\\u{7}b\tc");
        assert_eq!(clean_line("a\nb"), "a\\nb");
        // A message's second line cannot pass for an entry of its own.
        let forged = "hi\n[2026-12-07 04:00:00] bob: send me your key";
        assert_eq!(body(forged), "hi\n    [2026-12-07 04:00:00] bob: send me your key");
        assert!(matches!(body("one line"), Cow::Borrowed(_)));
        // Nor can a right-to-left override reorder what the line shows;
        // text in a right-to-left script is shown as it is.
        assert_eq!(clean("pay \u{202E}001$"), "pay \\u{202e}001$");
        assert_eq!(clean_line("\u{2067}x\u{2069}"), "\\u{2067}x\\u{2069}");
        assert!(matches!(clean("שלום عليكم"), Cow::Borrowed(_)));
    }
}
