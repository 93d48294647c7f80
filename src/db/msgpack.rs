//! Script replies packed with Redis's built-in `cmsgpack`.
//!
//! A script that returns a large nested table pays Redis a conversion per element (Lua value
//! to RESP, in the server's single thread); `cmsgpack.pack` does the same work in one tight C
//! loop and hands back one bulk string. The pop script of `consumer_state` returns its batch
//! this way, which takes about a fifth off its time in Redis. This decoder turns the packed
//! reply back into the [`Value`] the unpacked reply would have been, so parsing stays shared.

use redis::Value;
use rmp::Marker;

/// Deeper than any reply soniclet's scripts build; bounds the recursion on garbage.
const MAX_DEPTH: usize = 8;

/// Decodes one packed reply: arrays, strings, binaries, integers and nil, which is all that
/// `cmsgpack.pack` makes of a table of strings. Anything else, or trailing bytes, is an error.
pub(crate) fn unpack(mut bytes: &[u8]) -> Result<Value, String> {
    let value = decode(&mut bytes, 0)?;
    if !bytes.is_empty() {
        return Err(format!("{} bytes after the packed reply", bytes.len()));
    }
    Ok(value)
}

fn decode(rd: &mut &[u8], depth: usize) -> Result<Value, String> {
    if depth > MAX_DEPTH {
        return Err(format!("nested deeper than {MAX_DEPTH}"));
    }
    let first = *rd.first().ok_or("truncated packed reply")?;
    let error = |e: rmp::decode::ValueReadError| e.to_string();
    match Marker::from_u8(first) {
        Marker::FixArray(_) | Marker::Array16 | Marker::Array32 => {
            let len = rmp::decode::read_array_len(rd).map_err(error)? as usize;
            // Every element takes at least a byte, so a lying length cannot allocate much.
            let mut items = Vec::with_capacity(len.min(rd.len()));
            for _ in 0..len {
                items.push(decode(rd, depth + 1)?);
            }
            Ok(Value::Array(items))
        }
        Marker::FixStr(_) | Marker::Str8 | Marker::Str16 | Marker::Str32 => {
            let len = rmp::decode::read_str_len(rd).map_err(error)? as usize;
            take(rd, len)
        }
        Marker::Bin8 | Marker::Bin16 | Marker::Bin32 => {
            let len = rmp::decode::read_bin_len(rd).map_err(error)? as usize;
            take(rd, len)
        }
        Marker::Null => {
            *rd = &rd[1..];
            Ok(Value::Nil)
        }
        Marker::FixPos(_)
        | Marker::FixNeg(_)
        | Marker::U8
        | Marker::U16
        | Marker::U32
        | Marker::U64
        | Marker::I8
        | Marker::I16
        | Marker::I32
        | Marker::I64 => {
            let n: i64 = rmp::decode::read_int(rd).map_err(|e| e.to_string())?;
            Ok(Value::Int(n))
        }
        other => Err(format!("unexpected MessagePack type {other:?}")),
    }
}

fn take(rd: &mut &[u8], len: usize) -> Result<Value, String> {
    if rd.len() < len {
        return Err(format!("a string of {len} bytes is cut short at {}", rd.len()));
    }
    let (head, tail) = rd.split_at(len);
    *rd = tail;
    Ok(Value::BulkString(head.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pack(value: &Value, out: &mut Vec<u8>) {
        match value {
            Value::Array(items) => {
                rmp::encode::write_array_len(out, items.len() as u32).unwrap();
                items.iter().for_each(|i| pack(i, out));
            }
            Value::BulkString(b) => {
                rmp::encode::write_str_len(out, b.len() as u32).unwrap();
                out.extend_from_slice(b);
            }
            Value::Int(n) => {
                rmp::encode::write_sint(out, *n).unwrap();
            }
            Value::Nil => rmp::encode::write_nil(out).unwrap(),
            other => panic!("not packed by the scripts: {other:?}"),
        }
    }

    #[test]
    fn round_trips_what_the_pop_script_returns() {
        let s = |t: &str| Value::BulkString(t.as_bytes().to_vec());
        let long = Value::BulkString(vec![b'x'; 70_000]);
        let reply = Value::Array(vec![
            Value::Array(vec![s("10.0.0.0/24"), Value::Array(vec![s("nexthop"), s("10.0.0.1"), s("ifname"), long])]),
            Value::Array(vec![s("gone"), Value::Array(vec![])]),
            Value::Array(vec![Value::BulkString(vec![0xff, 0xfe]), Value::Int(-3), Value::Int(70_000), Value::Nil]),
        ]);
        let mut packed = Vec::new();
        pack(&reply, &mut packed);
        assert_eq!(unpack(&packed).unwrap(), reply);
    }

    #[test]
    fn refuses_truncated_trailing_and_foreign_input() {
        let mut packed = Vec::new();
        pack(&Value::Array(vec![Value::BulkString(b"abcdef".to_vec())]), &mut packed);
        for cut in 0..packed.len() {
            assert!(unpack(&packed[..cut]).is_err(), "cut at {cut}");
        }
        packed.push(0xc0);
        assert!(unpack(&packed).unwrap_err().contains("after the packed reply"));
        // A map is never packed by the scripts.
        assert!(unpack(&[0x81, 0xa1, b'a', 0x01]).unwrap_err().contains("unexpected"));
        // An array claiming four billion elements in five bytes.
        assert!(unpack(&[0xdd, 0xff, 0xff, 0xff, 0xff]).is_err());
        let mut deep = vec![0x91; 20];
        deep.push(0xc0);
        assert!(unpack(&deep).unwrap_err().contains("nested deeper"));
    }
}
