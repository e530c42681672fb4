//! The Media Streams parser: valid messages parse, and neither arbitrary text nor mutated
//! messages make it panic.

use phone_agent_load::protocol::Event;
use proptest::prelude::*;

/// Valid messages the parser must accept, to mutate.
const VALID: [&str; 5] = [
    r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#,
    r#"{"event":"start","sequenceNumber":"1","start":{"accountSid":"AC1","streamSid":"MZ1","callSid":"CA1","tracks":["inbound"],"customParameters":{},"mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1}},"streamSid":"MZ1"}"#,
    r#"{"event":"media","sequenceNumber":"3","media":{"track":"inbound","chunk":"1","timestamp":"5","payload":"no+JhoaJjpzSHxAKBgYJDh0="},"streamSid":"MZ1"}"#,
    r#"{"event":"mark","streamSid":"MZ1","mark":{"name":"answer-1"}}"#,
    r#"{"event":"clear","streamSid":"MZ1"}"#,
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn the_parser_never_panics_on_arbitrary_text(s in "\\PC*") {
        let _ = Event::parse(&s);
    }

    #[test]
    fn the_parser_never_panics_on_mutated_messages(
        which in 0..VALID.len(),
        edits in proptest::collection::vec((any::<usize>(), any::<char>(), 0..3u8), 1..8),
    ) {
        let mut chars: Vec<char> = VALID[which].chars().collect();
        for (at, c, op) in edits {
            let i = at % (chars.len() + 1);
            match op {
                0 => chars.insert(i, c),
                1 if i < chars.len() => { chars.remove(i); }
                _ if i < chars.len() => chars[i] = c,
                _ => {}
            }
        }
        let text: String = chars.into_iter().collect();
        if let Ok(event) = Event::parse(&text) {
            // Whatever parses, serializes back to something that parses the same.
            prop_assert_eq!(Event::parse(&event.to_json()).unwrap(), event);
        }
    }
}

#[test]
fn valid_messages_parse() {
    for v in VALID {
        assert!(Event::parse(v).is_ok(), "{v}");
    }
}
