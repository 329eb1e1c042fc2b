use redis::Value;

use super::*;

fn bulk(s: &str) -> Value {
    Value::BulkString(s.as_bytes().to_vec())
}

#[test]
fn a_field_of_an_xinfo_reply_is_found_by_name() {
    let pairs = vec![
        bulk("name"),
        bulk("mailhop"),
        bulk("lag"),
        Value::Int(7),
        bulk("pending"),
        Value::Nil,
    ];
    assert_eq!(show(field(&pairs, "name")), "mailhop");
    assert_eq!(show(field(&pairs, "lag")), "7");
    assert_eq!(show(field(&pairs, "pending")), "-");
    assert_eq!(show(field(&pairs, "missing")), "-");
    let map = Value::Map(vec![(bulk("lag"), Value::Int(3))]);
    assert_eq!(show(field(&map_items(&map), "lag")), "3");
}
