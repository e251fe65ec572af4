//! The rule tests' results as a JUnit XML report (`fds rules test --junit
//! FILE`), the format CI servers (GitLab, Jenkins, GitHub Actions reporters)
//! read to show each test, so a bank that keeps its rules in a repository
//! sees a broken case in the merge request that broke it.
//!
//! One `<testsuite>` per case file, one `<testcase>` per case, carrying its
//! file and line; a failure holds every unmet expectation and what the rules
//! did instead, as `fds rules test` prints them. With coverage required, a
//! `coverage` suite holds one test per rule. Written by hand: a few dozen
//! lines of XML do not call for a dependency in every build.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;

use super::{Case, Failure, Outcome};

/// The report of running `cases` (with `outcome`); `coverage`: also a test
/// per rule of `rules`, failing when the rule lacks a firing case or a near
/// miss.
pub fn report(cases: &[Case], outcome: &Outcome, rules: &[&str], coverage: bool) -> String {
    let failed = |c: &Case| outcome.failures.iter().find(|f| f.path == c.path && f.line == c.line);
    let mut files: BTreeMap<&Path, Vec<(&Case, Option<&Failure>)>> = BTreeMap::new();
    for case in cases {
        files.entry(case.path.as_path()).or_default().push((case, failed(case)));
    }
    let mut suites = String::new();
    let (mut tests, mut failures) = (0, 0);
    for (path, cases) in &files {
        let path = path.display().to_string();
        let failing = cases.iter().filter(|(_, f)| f.is_some()).count();
        let _ =
            writeln!(suites, r#"  <testsuite name="{}" tests="{}" failures="{failing}">"#, escape(&path), cases.len());
        for (case, failure) in cases {
            let open = format!(
                r#"    <testcase name="{}" classname="{}" file="{}" line="{}""#,
                escape(&case.name),
                escape(&path),
                escape(&path),
                case.line
            );
            match failure {
                None => {
                    let _ = writeln!(suites, "{open}/>");
                }
                Some(f) => {
                    let _ = writeln!(suites, "{open}>");
                    let message = f.expected.iter().map(|e| format!("expected {e}")).collect::<Vec<_>>().join("; ");
                    let _ = writeln!(
                        suites,
                        r#"      <failure message="{}" type="rule test">{}</failure>"#,
                        escape(&message),
                        escape(&f.to_string())
                    );
                    let _ = writeln!(suites, "    </testcase>");
                }
            }
        }
        suites.push_str("  </testsuite>\n");
        tests += cases.len();
        failures += failing;
    }
    if coverage {
        let c = &outcome.coverage;
        let mut uncovered = 0;
        let mut body = String::new();
        for rule in rules {
            let missing: Vec<&str> = [
                (c.without_firing_case.iter().any(|r| r == rule), "case that must fire it"),
                (c.without_near_miss.iter().any(|r| r == rule), "near miss (case that must not fire it)"),
            ]
            .into_iter()
            .filter_map(|(missing, what)| missing.then_some(what))
            .collect();
            let open = format!(r#"    <testcase name="{}" classname="coverage""#, escape(rule));
            if missing.is_empty() {
                let _ = writeln!(body, "{open}/>");
            } else {
                uncovered += 1;
                let message = format!("rule {rule} has no {}", missing.join(" and no "));
                let _ =
                    writeln!(body, r#"{open}><failure message="{}" type="coverage"/></testcase>"#, escape(&message));
            }
        }
        let _ = writeln!(suites, r#"  <testsuite name="coverage" tests="{}" failures="{uncovered}">"#, rules.len());
        suites.push_str(&body);
        suites.push_str("  </testsuite>\n");
        tests += rules.len();
        failures += uncovered;
    }
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <testsuites name=\"fds rules test\" tests=\"{tests}\" failures=\"{failures}\">\n{suites}</testsuites>\n"
    )
}

/// Text as XML attribute value or element content: the five markup
/// characters escaped, and control characters other than tab and newline
/// (which XML 1.0 cannot hold at all) written as U+FFFD.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' => out.push(c),
            c if c.is_control() => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_and_control_characters_are_escaped() {
        assert_eq!(escape(r#"a<b & "c" > 'd'"#), "a&lt;b &amp; &quot;c&quot; &gt; &apos;d&apos;");
        assert_eq!(escape("대포통장\tline\nnext\u{1}"), "대포통장\tline\nnext\u{fffd}");
    }
}
