//! Redis Cluster hash slots (the cluster specification's "Keys hash tags"
//! rules) and the start-up check that each stream's keys share one slot:
//! a Lua script's keys, and the commands the writer sends for one stream,
//! must all be served by one node.

use crate::config::FeedConfig;

/// Number of hash slots of a Redis Cluster.
pub const SLOTS: u16 = 16384;

/// CRC16-CCITT (XMODEM: polynomial 0x1021, initial value 0), the cluster's
/// key hash.
fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in data {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The part of `key` that is hashed: the text between the first `{` and
/// the first `}` after it when that is not empty, else the whole key.
pub fn hashed_part(key: &[u8]) -> &[u8] {
    if let Some(open) = key.iter().position(|&b| b == b'{')
        && let Some(len) = key[open + 1..].iter().position(|&b| b == b'}')
        && len > 0
    {
        return &key[open + 1..open + 1 + len];
    }
    key
}

/// The hash slot of `key` (0..16383).
pub fn slot(key: &[u8]) -> u16 {
    crc16(hashed_part(key)) % SLOTS
}

/// The keys of `stream` that one script or one writer round touch
/// together: the stream, a progress hash, its retry keys and its results
/// stream.
pub fn stream_keys(stream: &str, results_stream: &str) -> Vec<(&'static str, String)> {
    vec![
        ("the stream", stream.to_string()),
        (
            "its progress hashes",
            super::progress_key(stream, "0-0").replace(":0-0", ":<id>"),
        ),
        ("its retry set", super::retry::due_key(stream)),
        ("its retry jobs", super::retry::jobs_key(stream)),
        (
            "its results stream",
            super::results_key(results_stream, stream),
        ),
    ]
}

/// With `[feed] cluster = true`: every stream's keys on one slot (see
/// [`stream_keys`]), else the configuration error naming the stream.
pub fn check_streams(config: &FeedConfig) -> Result<(), String> {
    for stream in &config.streams {
        let keys = stream_keys(stream, &config.results_stream);
        let home = slot(stream.as_bytes());
        // A progress hash is named after its entry id; any id hashes alike
        // only if the stream's hash tag decides the slot.
        let id_free = slot(super::progress_key(stream, "1-0").as_bytes())
            == slot(super::progress_key(stream, "2-0").as_bytes());
        let apart: Vec<String> = keys
            .iter()
            .filter(|(_, key)| slot(key.as_bytes()) != home)
            .map(|(what, key)| format!("{what} {key:?} (slot {})", slot(key.as_bytes())))
            .collect();
        if apart.is_empty() && id_free {
            continue;
        }
        let apart = if apart.is_empty() {
            "its progress hashes (one per entry id)".to_string()
        } else {
            apart.join(", ")
        };
        return Err(format!(
            "feed.cluster: the keys of stream {stream:?} (slot {home}) are not all on one \
             Redis Cluster slot: {apart}; name the stream with a hash tag and give it its \
             own results stream, e.g. streams = [\"{{s0}}:jobs\"], results_stream = \
             \"$stream:results\""
        ));
    }
    Ok(())
}

/// The two keys of one destination in the limits' acquire script share a
/// slot for any destination name (`prefix` is `LimitSettings::prefix`).
pub fn check_limit_keys(leases: &str, tat: &str) -> Result<(), String> {
    if slot(leases.as_bytes()) == slot(tat.as_bytes()) {
        return Ok(());
    }
    Err(format!(
        "feed.cluster: the destination limit keys {leases:?} and {tat:?} are on different \
         Redis Cluster slots"
    ))
}

#[cfg(test)]
#[path = "slot_tests.rs"]
mod tests;
