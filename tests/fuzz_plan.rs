//! Property test of the plan reader and validator: random edits of the reference
//! plan (bytes changed, lines dropped, doubled or swapped, tokens inserted) and
//! random text never make them panic, and every problem points inside the file.
//! `PROPTEST_CASES=100000 cargo test --release --test fuzz_plan` runs it longer.

use proptest::prelude::*;

const TOKENS: &[&str] = &[
    "[",
    "]",
    "{",
    "}",
    "=",
    "\"",
    "${",
    "}",
    ".",
    "[[",
    "\n",
    "per_az = true",
    "vpc.main",
    "-1",
    "1e99",
    "\u{0}",
    "🙂",
    "\\",
    "'''",
    "#",
];

fn reference() -> String {
    std::fs::read_to_string("plans/taskstream.toml").unwrap()
}

#[derive(Debug, Clone)]
enum Edit {
    Byte(usize, u8),
    DropLine(usize),
    DoubleLine(usize),
    SwapLines(usize, usize),
    Insert(usize, usize),
    Truncate(usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Byte(i, b)),
        any::<usize>().prop_map(Edit::DropLine),
        any::<usize>().prop_map(Edit::DoubleLine),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Edit::SwapLines(a, b)),
        (any::<usize>(), 0..TOKENS.len()).prop_map(|(i, t)| Edit::Insert(i, t)),
        any::<usize>().prop_map(Edit::Truncate),
    ]
}

fn apply(text: &str, edits: &[Edit]) -> Vec<u8> {
    let mut lines: Vec<Vec<u8>> = text.split('\n').map(|l| l.as_bytes().to_vec()).collect();
    for e in edits {
        let n = lines.len().max(1);
        match *e {
            Edit::Byte(i, b) => {
                let line = &mut lines[i % n];
                if !line.is_empty() {
                    let at = i % line.len();
                    line[at] = b;
                }
            }
            Edit::DropLine(i) => {
                if lines.len() > 1 {
                    lines.remove(i % n);
                }
            }
            Edit::DoubleLine(i) => {
                let l = lines[i % n].clone();
                lines.insert(i % n, l);
            }
            Edit::SwapLines(a, b) => lines.swap(a % n, b % n),
            Edit::Insert(i, t) => {
                let line = &mut lines[i % n];
                let at = if line.is_empty() { 0 } else { i % line.len() };
                line.splice(at..at, TOKENS[t].bytes());
            }
            Edit::Truncate(i) => lines.truncate(1 + i % n),
        }
    }
    lines.join(&b'\n')
}

fn check_no_panic(bytes: &[u8]) {
    let Ok(source) = std::str::from_utf8(bytes) else {
        return;
    };
    let (stack, diags) = tsprov::plan::read::read("fuzz.toml", source, None);
    for d in &diags {
        assert!(
            d.span.start <= source.len() && d.span.end <= source.len() + 1,
            "span {:?} outside the file",
            d.span
        );
    }
    if let Some(stack) = stack {
        let _ = tsprov::plan::check(&stack);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn edited_reference_plans_never_panic(edits in proptest::collection::vec(edit(), 1..12)) {
        check_no_panic(&apply(&reference(), &edits));
    }

    #[test]
    fn random_text_never_panics(text in "(\\PC|\\n|\\[|\\]|=|\"|\\{|\\}){0,400}") {
        check_no_panic(text.as_bytes());
    }
}
