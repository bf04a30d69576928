//! Fuzz `--shard`'s parser: arbitrary text as `I/N`. Must never panic; what it accepts must
//! be a shard below its count that prints back as it parses.
#![no_main]

use libfuzzer_sys::fuzz_target;
use smd_onnx::evolve::Shard;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(s) = text.parse::<Shard>() {
        assert!(s.index < s.count);
        assert_eq!(s.to_string().parse::<Shard>(), Ok(s));
        // Every child has exactly one owner among the count's shards.
        let child = u32::from(data.first().copied().unwrap_or(0));
        assert_eq!(child % s.count == s.index, s.owns(child));
    }
});
