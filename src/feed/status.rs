//! `mailhop feed status`: what Redis says of the feed — per job stream its
//! length, the group's lag (entries not yet read) and pending entries per
//! consumer (XINFO STREAM, XINFO GROUPS, XPENDING), the results stream's
//! length and the claims each consumer made (the feed's counter hash).

use std::time::Duration;

use redis::Value;

use super::conn::{Conn, FeedError};
use crate::config::FeedConfig;

fn field<'a>(pairs: &'a [Value], name: &str) -> Option<&'a Value> {
    pairs.chunks(2).find_map(|pair| match pair {
        [Value::BulkString(k), v] if k == name.as_bytes() => Some(v),
        [Value::SimpleString(k), v] if k == name => Some(v),
        _ => None,
    })
}

fn map_items(value: &Value) -> Vec<Value> {
    match value {
        Value::Array(items) => items.clone(),
        Value::Map(pairs) => pairs
            .iter()
            .flat_map(|(k, v)| [k.clone(), v.clone()])
            .collect(),
        _ => Vec::new(),
    }
}

/// `text` with its control characters escaped (`\u{1b}`): names and ids
/// come from Redis and go to a terminal, one line each.
fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

fn show(value: Option<&Value>) -> String {
    match value {
        Some(Value::Int(n)) => n.to_string(),
        Some(Value::BulkString(b)) => printable(&String::from_utf8_lossy(b)),
        Some(Value::SimpleString(s)) => printable(s),
        Some(Value::Nil) | None => "-".into(),
        Some(other) => printable(&format!("{other:?}")),
    }
}

/// The status text.
pub fn render(config: &FeedConfig) -> Result<String, FeedError> {
    let mut conn = Conn::new(
        &config.redis_url,
        config.cluster,
        "status",
        Duration::from_secs(5),
    )?;
    conn.ensure()?;
    let mut out = String::new();
    for stream in &config.streams {
        let length: i64 = conn.query(redis::cmd("XLEN").arg(stream))?;
        out.push_str(&format!("stream {stream}: length {length}\n"));
        let groups: Value = match conn.query(redis::cmd("XINFO").arg("GROUPS").arg(stream)) {
            Ok(groups) => groups,
            Err(e) => {
                out.push_str(&format!("  no groups ({e})\n"));
                continue;
            }
        };
        out.push_str(&group_lines(&groups, &config.group));
        let pending: Value = conn.query(redis::cmd("XPENDING").arg(stream).arg(&config.group))?;
        out.push_str(&consumer_lines(&pending));
    }
    for results in results_streams(config) {
        let length: i64 = conn.query(redis::cmd("XLEN").arg(&results))?;
        out.push_str(&format!(
            "results {}: length {length}\n",
            printable(&results)
        ));
    }
    let claims: Vec<(String, String)> =
        conn.query(redis::cmd("HGETALL").arg(super::claims_key(&config.group)))?;
    if claims.is_empty() {
        out.push_str("claims: none\n");
    }
    for (consumer, count) in claims {
        out.push_str(&format!(
            "claims by {}: {}\n",
            printable(&consumer),
            printable(&count)
        ));
    }
    Ok(out)
}

/// The results streams of the feed: one per job stream when
/// results_stream contains `$stream`, else the one (listed once).
pub fn results_streams(config: &FeedConfig) -> Vec<String> {
    let mut all: Vec<String> = Vec::new();
    for stream in &config.streams {
        let results = super::results_key(&config.results_stream, stream);
        if !all.contains(&results) {
            all.push(results);
        }
    }
    if all.is_empty() {
        all.push(config.results_stream.clone());
    }
    all
}

/// The lines of an XINFO GROUPS reply (an array of field lists, RESP2, or
/// of maps, RESP3) on the group named `group`: its lag, pending entries and
/// last delivered id.
pub fn group_lines(groups: &Value, group: &str) -> String {
    let groups: &[Value] = match groups {
        Value::Array(items) => items,
        _ => &[],
    };
    let mut out = String::new();
    for one in groups {
        let pairs = map_items(one);
        if show(field(&pairs, "name")) != group {
            continue;
        }
        out.push_str(&format!(
            "  group {group}: lag {}, pending {}, last delivered {}\n",
            show(field(&pairs, "lag")),
            show(field(&pairs, "pending")),
            show(field(&pairs, "last-delivered-id")),
        ));
    }
    out
}

/// The lines of an XPENDING summary reply (`[count, first id, last id,
/// [[consumer, count], ...]]`): the pending entries of each consumer.
pub fn consumer_lines(pending: &Value) -> String {
    let mut out = String::new();
    if let Value::Array(summary) = pending
        && let Some(Value::Array(consumers)) = summary.get(3)
    {
        for consumer in consumers {
            if let Value::Array(pair) = consumer
                && let [name, count] = pair.as_slice()
            {
                out.push_str(&format!(
                    "  consumer {}: pending {}\n",
                    show(Some(name)),
                    show(Some(count))
                ));
            }
        }
    }
    out
}

#[cfg(test)]
#[path = "status_tests.rs"]
mod tests;
