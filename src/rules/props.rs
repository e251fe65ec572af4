//! Property tests of the condition language: any text is compiled or refused
//! with problems inside it, never a panic, and the problems point at
//! character boundaries an editor can show.

use proptest::prelude::*;

use super::check_condition;
use crate::features::SCHEMA;

const LISTS: [&str; 2] = ["mule_accounts", "blocked_devices"];

/// Pieces conditions are made of, so generated text reaches the type checker
/// and evaluation, not only the lexer's first error.
fn token() -> impl Strategy<Value = String> {
    let words: Vec<&'static str> = vec![
        "and",
        "or",
        "not",
        "in",
        "true",
        "false",
        "(",
        ")",
        "==",
        "!=",
        ">=",
        "<=",
        ">",
        "<",
        "+",
        "-",
        "*",
        "/",
        "100만",
        "3억",
        "1.5",
        "0",
        "-7",
        "account",
        "payee",
        "device",
        "ip",
        "list",
        "\"",
        "'",
        ".",
        ",",
        "만",
        "9999999999999999999",
    ];
    prop_oneof![
        4 => prop::sample::select(words).prop_map(str::to_owned),
        4 => prop::sample::select(SCHEMA.iter().map(|f| f.name).collect::<Vec<_>>()).prop_map(str::to_owned),
        1 => prop::sample::select(LISTS.to_vec()).prop_map(str::to_owned),
        1 => "\\PC{1,6}",
    ]
}

fn holds_its_promise(src: &str) -> Result<(), TestCaseError> {
    let lists: Vec<String> = LISTS.iter().map(|l| l.to_string()).collect();
    if let Err(problems) = check_condition(src, &lists) {
        prop_assert!(!problems.is_empty(), "refused without a reason: {src:?}");
        for p in problems {
            prop_assert!(p.offset <= src.len() && src.is_char_boundary(p.offset), "{p:?} outside {src:?}");
            prop_assert!(!p.message.is_empty());
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3_000))]

    #[test]
    fn any_text_is_compiled_or_refused_inside_it(src in "\\PC{0,80}") {
        holds_its_promise(&src)?;
    }

    #[test]
    fn token_soup_is_compiled_or_refused_inside_it(tokens in prop::collection::vec(token(), 0..24), spaced in any::<bool>()) {
        let src = tokens.join(if spaced { " " } else { "" });
        holds_its_promise(&src)?;
    }
}

#[test]
fn nesting_past_the_limit_is_refused_at_a_position() {
    for depth in [65, 1_000, 10_000] {
        let src = format!("{}amount > 1{}", "(".repeat(depth), ")".repeat(depth));
        let problems = check_condition(&src, &[]).unwrap_err();
        assert!(problems[0].offset < src.len() && problems[0].message.contains("nested too deeply"), "{problems:?}");
        let src = format!("{}true", "not ".repeat(depth));
        assert!(check_condition(&src, &[]).is_err());
    }
}
