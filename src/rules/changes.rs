//! What changed between two rule sets, by rule id: for the log line of every
//! reload and for the head of a backtest report, so a change is always
//! visible by name, not only as a new version hash.

use std::fmt;

use serde::Serialize;

use super::{Rule, RuleSet};

/// The difference between a rule set and the one before it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RuleChanges {
    /// The earlier version.
    pub before: String,
    /// The later version.
    pub after: String,
    /// Rule ids only in the later set, in its order.
    pub added: Vec<String>,
    /// Rule ids only in the earlier set, in its order.
    pub removed: Vec<String>,
    /// Rule ids in both whose condition, action, reason, label, description
    /// or shadow flag differ, in the later set's order.
    pub changed: Vec<String>,
    /// Lists whose entries differ: name, entries before and after (0 for a
    /// list that is new or gone).
    pub lists: Vec<(String, usize, usize)>,
    /// `ruleset.toml` differs.
    pub settings: bool,
}

impl RuleChanges {
    /// Nothing a decision could notice changed (files may still differ in
    /// comments or order).
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.removed.is_empty()
            && self.changed.is_empty()
            && self.lists.is_empty()
            && !self.settings
    }
}

/// Everything about a rule that can change a decision or what analysts read.
fn same_rule(a: &Rule, b: &Rule) -> bool {
    a.when == b.when
        && a.action == b.action
        && a.reason == b.reason
        && a.label == b.label
        && a.description == b.description
        && a.shadow == b.shadow
}

impl RuleSet {
    /// What changed from `before` to this set.
    pub fn changes_since(&self, before: &RuleSet) -> RuleChanges {
        let find = |set: &'_ RuleSet, id: &str| set.rules.iter().position(|r| r.id == id);
        let mut c = RuleChanges {
            before: before.version.clone(),
            after: self.version.clone(),
            settings: self.settings != before.settings,
            ..RuleChanges::default()
        };
        for rule in &self.rules {
            match find(before, &rule.id) {
                None => c.added.push(rule.id.clone()),
                Some(i) if !same_rule(&before.rules[i], rule) => c.changed.push(rule.id.clone()),
                Some(_) => {}
            }
        }
        c.removed = before.rules.iter().filter(|r| find(self, &r.id).is_none()).map(|r| r.id.clone()).collect();
        for list in &self.lists {
            match before.lists.iter().find(|l| l.name() == list.name()) {
                Some(old) if old.same_entries(list) => {}
                old => c.lists.push((list.name().to_owned(), old.map_or(0, |l| l.len()), list.len())),
            }
        }
        for old in before.lists.iter().filter(|o| !self.lists.iter().any(|l| l.name() == o.name())) {
            c.lists.push((old.name().to_owned(), old.len(), 0));
        }
        c
    }
}

impl fmt::Display for RuleChanges {
    /// One line: `rules added [A, B], changed [C]; lists mule_accounts 10 -> 12`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("no rule, list or setting changed");
        }
        let mut parts = Vec::new();
        let rules: Vec<String> = [("added", &self.added), ("removed", &self.removed), ("changed", &self.changed)]
            .into_iter()
            .filter(|(_, ids)| !ids.is_empty())
            .map(|(what, ids)| format!("{what} [{}]", ids.join(", ")))
            .collect();
        if !rules.is_empty() {
            parts.push(format!("rules {}", rules.join(", ")));
        }
        if !self.lists.is_empty() {
            let lists: Vec<String> = self.lists.iter().map(|(n, a, b)| format!("{n} {a} -> {b} entries")).collect();
            parts.push(format!("lists {}", lists.join(", ")));
        }
        if self.settings {
            parts.push("ruleset.toml settings changed".to_owned());
        }
        f.write_str(&parts.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(id: &str, when: &str) -> String {
        format!(
            "[[rule]]\nid = \"{id}\"\nlabel = \"l\"\ndescription = \"d\"\nwhen = \"{when}\"\naction = \"score\"\nscore = 10\nreason = \"R\"\n"
        )
    }

    #[test]
    fn names_rules_added_removed_and_changed_and_lists_by_entries() {
        let before = [rule("A", "amount > 1"), rule("B", "amount > 2"), rule("C", "amount > 3")].concat();
        // B moved to the end with a comment (not a change), C changed, A gone, D new.
        let after =
            [rule("C", "amount > 30"), rule("D", "amount > 4"), format!("# moved\n{}", rule("B", "amount > 2"))]
                .concat();
        let old =
            RuleSet::from_files(&[("r.toml", &before), ("lists/m.txt", "088-1\n"), ("lists/gone.txt", "x\n")]).unwrap();
        let new = RuleSet::from_files(&[
            ("r.toml", &after),
            ("lists/m.txt", "088-1 expires=2027-01-01\n"),
            ("ruleset.toml", "hold_score = 90\n"),
        ])
        .unwrap();
        let c = new.changes_since(&old);
        assert_eq!(c.added, ["D"]);
        assert_eq!(c.removed, ["A"]);
        assert_eq!(c.changed, ["C"]);
        assert_eq!(c.lists, [("m".to_owned(), 1, 1), ("gone".to_owned(), 1, 0)]);
        assert!(c.settings);
        assert_eq!(
            c.to_string(),
            "rules added [D], removed [A], changed [C]; lists m 1 -> 1 entries, gone 1 -> 0 entries; ruleset.toml settings changed"
        );
        assert!(old.changes_since(&old).is_empty());
        assert_eq!(old.changes_since(&old).to_string(), "no rule, list or setting changed");
    }
}
