//! The condition language of `when`: lexer, parser, type checker, compiled
//! form and evaluation.
//!
//! Compilation runs once per load and may allocate freely; it turns the text
//! into [`BoolExpr`], a tree whose leaves hold resolved feature indexes and
//! list indexes and whose node types carry the static type (bool, integer,
//! float). Evaluation is therefore a walk with no name lookup, no type dispatch
//! on strings and no allocation.
//!
//! Errors are positioned by byte offset *within the condition text*; the loader
//! maps them back to the file.

use crate::features::{self, FeatureType, FeatureVector, Value};

use super::lists::List;
use super::Keys;

/// Deepest nesting accepted. Compilation and evaluation recurse over the
/// tree, so an absurd input (`((((...` or `a + a + ... + a` thousands long)
/// must be refused rather than overflow the stack.
const MAX_DEPTH: usize = 64;

/// Names of the transfer's string keys, only valid left of `in`.
const KEYS: [&str; 4] = ["account", "payee", "device", "ip"];

const KEYWORDS: [&str; 6] = ["and", "or", "not", "in", "true", "false"];

/// A compile problem at a byte offset within the condition text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExprError {
    /// Byte offset in the condition text (at most its length).
    pub offset: usize,
    /// What is wrong.
    pub message: String,
}

fn err(offset: usize, message: impl Into<String>) -> ExprError {
    ExprError { offset, message: message.into() }
}

// ---------------------------------------------------------------- lexer

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    start: usize,
    end: usize,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Tok<'s> {
    Int(i64),
    Float(f64),
    /// Identifiers and keywords; also digit-led words such as `2024_mules`,
    /// which only make sense as list names.
    Word(&'s str),
    LParen,
    RParen,
    Op(BinOp),
    Eof,
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Token<'s> {
    tok: Tok<'s>,
    span: Span,
}

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Split a condition into tokens, ending with [`Tok::Eof`] at `src.len()`.
fn lex(src: &str) -> Result<Vec<Token<'_>>, ExprError> {
    let mut tokens = Vec::new();
    let mut chars = src.char_indices().peekable();
    while let Some(&(start, c)) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        if is_word_char(c) {
            let end = src[start..].find(|c: char| !is_word_char(c)).map_or(src.len(), |n| start + n);
            let (tok, end) = if c.is_ascii_digit() && src[start..end].bytes().all(|b| b.is_ascii_digit() || b == b'_') {
                lex_number(src, start, end)?
            } else {
                (Tok::Word(&src[start..end]), end)
            };
            tokens.push(Token { tok, span: Span { start, end } });
            while chars.peek().is_some_and(|&(i, _)| i < end) {
                chars.next();
            }
            continue;
        }
        chars.next();
        let next = chars.peek().map(|&(_, c)| c);
        let two = |tok| (tok, 2);
        let (tok, len) = match (c, next) {
            ('(', _) => (Tok::LParen, 1),
            (')', _) => (Tok::RParen, 1),
            ('+', _) => (Tok::Op(BinOp::Add), 1),
            ('-', _) => (Tok::Op(BinOp::Sub), 1),
            ('*', _) => (Tok::Op(BinOp::Mul), 1),
            ('/', _) => (Tok::Op(BinOp::Div), 1),
            ('<', Some('=')) => two(Tok::Op(BinOp::Cmp(Cmp::Le))),
            ('<', _) => (Tok::Op(BinOp::Cmp(Cmp::Lt)), 1),
            ('>', Some('=')) => two(Tok::Op(BinOp::Cmp(Cmp::Ge))),
            ('>', _) => (Tok::Op(BinOp::Cmp(Cmp::Gt)), 1),
            ('=', Some('=')) => two(Tok::Op(BinOp::Cmp(Cmp::Eq))),
            ('!', Some('=')) => two(Tok::Op(BinOp::Cmp(Cmp::Ne))),
            _ => return Err(err(start, unexpected_char_message(c, next))),
        };
        if len == 2 {
            chars.next();
        }
        tokens.push(Token { tok, span: Span { start, end: start + len } });
    }
    tokens.push(Token { tok: Tok::Eof, span: Span { start: src.len(), end: src.len() } });
    Ok(tokens)
}

/// Analysts arrive from SQL, Excel and C-like languages; name the spelling
/// this language uses instead of just refusing the character.
fn unexpected_char_message(c: char, next: Option<char>) -> String {
    match (c, next) {
        ('&', _) => "`&&` is written `and` here".into(),
        ('|', _) => "`||` is written `or` here".into(),
        ('!', _) => "`!` is written `not` here".into(),
        ('=', _) => "use `==` to compare for equality".into(),
        ('.', _) => "a number needs a digit before `.`, e.g. `0.5`".into(),
        ('"' | '\'', _) => "quoted text has no meaning in a condition; put entries in a list file".into(),
        ('원', _) => "write amounts without `원`, e.g. `300만`".into(),
        _ => format!("unexpected character `{c}`"),
    }
}

/// Lex a number whose integer digits are `src[start..int_end]`, with an
/// optional fraction and 만/억 unit. Returns the token and where it ends.
fn lex_number(src: &str, start: usize, int_end: usize) -> Result<(Tok<'static>, usize), ExprError> {
    let int_digits = &src[start..int_end];
    check_underscores(int_digits, start)?;
    let mut end = int_end;
    let mut frac_digits: Option<&str> = None;
    if src[end..].starts_with('.') {
        let frac_start = end + 1;
        let frac_end =
            src[frac_start..].find(|c: char| !(c.is_ascii_digit() || c == '_')).map_or(src.len(), |n| frac_start + n);
        if frac_end == frac_start {
            return Err(err(end, "expected digits after `.`"));
        }
        check_underscores(&src[frac_start..frac_end], frac_start)?;
        frac_digits = Some(&src[frac_start..frac_end]);
        end = frac_end;
    }
    let unit = match src[end..].chars().next() {
        Some('만') => Some(10_000u64),
        Some('억') => Some(100_000_000u64),
        _ => None,
    };
    if unit.is_some() {
        end += '만'.len_utf8(); // 만 and 억 are both 3 bytes in UTF-8
    }
    let text = &src[start..end];
    if let Some(c) = src[end..].chars().next() {
        if c == '원' {
            return Err(err(end, format!("write amounts without `원`, e.g. `{text}`")));
        }
        if is_word_char(c) || c == '.' || c == '만' || c == '억' {
            return Err(err(end, format!("unexpected `{c}` after the number `{text}`")));
        }
    }
    let tok = number_value(int_digits, frac_digits, unit).map_err(|m| err(start, format!("`{text}`: {m}")))?;
    Ok((tok, end))
}

/// `1__000` and `1_000_` are typos; TOML and Rust refuse them too.
fn check_underscores(digits: &str, offset: usize) -> Result<(), ExprError> {
    let bad = digits.starts_with('_') || digits.ends_with('_') || digits.contains("__");
    if bad {
        let at = offset + digits.find('_').unwrap_or(0);
        return Err(err(at, "`_` may only separate digits, as in `1_000_000`"));
    }
    Ok(())
}

fn number_value(int_digits: &str, frac_digits: Option<&str>, unit: Option<u64>) -> Result<Tok<'static>, String> {
    let int: String = int_digits.chars().filter(|&c| c != '_').collect();
    let frac: Option<String> = frac_digits.map(|f| f.chars().filter(|&c| c != '_').collect());
    match (frac, unit) {
        (None, None) => int.parse::<i64>().map(Tok::Int).map_err(|_| "integer too large".into()),
        (Some(frac), None) => {
            let v: f64 = format!("{int}.{frac}").parse().map_err(|_| "not a number".to_string())?;
            if v.is_finite() {
                Ok(Tok::Float(v))
            } else {
                Err("number too large".into())
            }
        }
        (frac, Some(unit)) => unit_value(&int, frac.as_deref().unwrap_or(""), unit).map(Tok::Int),
    }
}

/// `1.5억` is exactly 150,000,000 won; computed in integers so it never
/// passes through a float, and refused if it is not a whole number of won.
fn unit_value(int: &str, frac: &str, unit: u64) -> Result<i64, String> {
    let too_large = || "amount too large".to_string();
    let int: u128 = int.parse().map_err(|_| too_large())?;
    let frac = frac.trim_end_matches('0');
    let scale = u32::try_from(frac.len())
        .ok()
        .and_then(|digits| 10u128.checked_pow(digits))
        .ok_or("not a whole number of won")?;
    let frac_value: u128 = if frac.is_empty() { 0 } else { frac.parse().map_err(|_| "not a whole number of won")? };
    let frac_won = frac_value.checked_mul(u128::from(unit)).ok_or("not a whole number of won")?;
    if frac_won % scale != 0 {
        return Err("not a whole number of won".into());
    }
    let total =
        int.checked_mul(u128::from(unit)).and_then(|w| w.checked_add(frac_won / scale)).ok_or_else(too_large)?;
    i64::try_from(total).map_err(|_| too_large())
}

// ---------------------------------------------------------------- parser

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cmp {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

impl Cmp {
    fn symbol(self) -> &'static str {
        match self {
            Cmp::Lt => "<",
            Cmp::Le => "<=",
            Cmp::Gt => ">",
            Cmp::Ge => ">=",
            Cmp::Eq => "==",
            Cmp::Ne => "!=",
        }
    }

    /// The operator with its sides swapped: `3 < x` is `x > 3`.
    fn flip(self) -> Cmp {
        match self {
            Cmp::Lt => Cmp::Gt,
            Cmp::Le => Cmp::Ge,
            Cmp::Gt => Cmp::Lt,
            Cmp::Ge => Cmp::Le,
            Cmp::Eq | Cmp::Ne => self,
        }
    }

    #[inline]
    fn int(self, a: i64, b: i64) -> bool {
        match self {
            Cmp::Lt => a < b,
            Cmp::Le => a <= b,
            Cmp::Gt => a > b,
            Cmp::Ge => a >= b,
            Cmp::Eq => a == b,
            Cmp::Ne => a != b,
        }
    }

    /// IEEE semantics: every comparison with NaN is false except `!=`.
    #[inline]
    fn float(self, a: f64, b: f64) -> bool {
        match self {
            Cmp::Lt => a < b,
            Cmp::Le => a <= b,
            Cmp::Gt => a > b,
            Cmp::Ge => a >= b,
            Cmp::Eq => a == b,
            Cmp::Ne => a != b,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BinOp {
    And,
    Or,
    Cmp(Cmp),
    Add,
    Sub,
    Mul,
    Div,
}

impl BinOp {
    fn symbol(self) -> &'static str {
        match self {
            BinOp::And => "and",
            BinOp::Or => "or",
            BinOp::Cmp(c) => c.symbol(),
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
        }
    }
}

#[derive(Debug)]
enum Node<'s> {
    Int(i64),
    Float(f64),
    Bool(bool),
    Name(&'s str),
    Neg(Box<Ast<'s>>),
    Not(Box<Ast<'s>>),
    Bin { op: BinOp, op_at: usize, left: Box<Ast<'s>>, right: Box<Ast<'s>> },
    In { key: &'s str, key_at: usize, list: &'s str, list_at: usize, negate: bool },
}

#[derive(Debug)]
struct Ast<'s> {
    node: Node<'s>,
    span: Span,
    depth: usize,
}

struct Parser<'s> {
    src: &'s str,
    tokens: Vec<Token<'s>>,
    pos: usize,
    /// Current recursion through `(`, `not` and unary `-`, bounded before
    /// recursing so the parser itself cannot overflow the stack.
    nesting: usize,
}

fn parse(src: &str) -> Result<Ast<'_>, ExprError> {
    let tokens = lex(src)?;
    let mut p = Parser { src, tokens, pos: 0, nesting: 0 };
    if p.peek().tok == Tok::Eof {
        return Err(err(0, "empty condition"));
    }
    let ast = p.or()?;
    let next = p.peek();
    if next.tok != Tok::Eof {
        let found = p.found(next);
        let message = match next.tok {
            Tok::RParen => "unexpected `)` with no matching `(`".to_string(),
            Tok::Op(BinOp::Cmp(_)) => {
                format!("comparisons cannot be chained: write `a < b and b < c` instead of `a < b < c` (found {found})")
            }
            Tok::Word(w) if KEYWORDS.contains(&w.to_ascii_lowercase().as_str()) => {
                format!("keywords are lowercase: write `{}`, not `{w}`", w.to_ascii_lowercase())
            }
            _ => format!("expected `and`, `or` or the end of the condition, found {found}"),
        };
        return Err(err(next.span.start, message));
    }
    Ok(ast)
}

fn too_deep(at: usize) -> ExprError {
    err(at, format!("condition is nested too deeply (more than {MAX_DEPTH} levels)"))
}

impl<'s> Parser<'s> {
    fn peek(&self) -> Token<'s> {
        self.peek_at(0)
    }

    fn peek_at(&self, n: usize) -> Token<'s> {
        // The token list always ends with Eof, which is returned past the end.
        let last = self.tokens.len().saturating_sub(1);
        self.tokens[(self.pos + n).min(last)]
    }

    fn bump(&mut self) -> Token<'s> {
        let t = self.peek();
        if self.pos + 1 < self.tokens.len() {
            self.pos += 1;
        }
        t
    }

    fn text(&self, t: Token<'s>) -> &'s str {
        self.src.get(t.span.start..t.span.end).unwrap_or("")
    }

    /// A token as messages show it.
    fn found(&self, t: Token<'s>) -> String {
        if t.tok == Tok::Eof {
            "the end of the condition".to_string()
        } else {
            format!("`{}`", self.text(t))
        }
    }

    fn is_keyword(&self, n: usize, kw: &str) -> bool {
        matches!(self.peek_at(n).tok, Tok::Word(w) if w == kw)
    }

    fn node(&self, node: Node<'s>, span: Span, depth: usize) -> Result<Ast<'s>, ExprError> {
        if depth > MAX_DEPTH {
            return Err(too_deep(span.start));
        }
        Ok(Ast { node, span, depth })
    }

    /// Parse `f` one nesting level deeper.
    fn nested<T>(&mut self, at: usize, f: impl FnOnce(&mut Self) -> Result<T, ExprError>) -> Result<T, ExprError> {
        if self.nesting >= MAX_DEPTH {
            return Err(too_deep(at));
        }
        self.nesting += 1;
        let result = f(self);
        self.nesting -= 1;
        result
    }

    fn binary(&self, op: BinOp, op_at: usize, left: Ast<'s>, right: Ast<'s>) -> Result<Ast<'s>, ExprError> {
        let span = Span { start: left.span.start, end: right.span.end };
        let depth = left.depth.max(right.depth) + 1;
        self.node(Node::Bin { op, op_at, left: Box::new(left), right: Box::new(right) }, span, depth)
    }

    fn or(&mut self) -> Result<Ast<'s>, ExprError> {
        let mut left = self.and()?;
        while self.is_keyword(0, "or") {
            let op_at = self.bump().span.start;
            let right = self.and()?;
            left = self.binary(BinOp::Or, op_at, left, right)?;
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Ast<'s>, ExprError> {
        let mut left = self.not()?;
        while self.is_keyword(0, "and") {
            let op_at = self.bump().span.start;
            let right = self.not()?;
            left = self.binary(BinOp::And, op_at, left, right)?;
        }
        Ok(left)
    }

    fn not(&mut self) -> Result<Ast<'s>, ExprError> {
        if self.is_keyword(0, "not") {
            let start = self.bump().span.start;
            let inner = self.nested(start, Self::not)?;
            let span = Span { start, end: inner.span.end };
            let depth = inner.depth + 1;
            return self.node(Node::Not(Box::new(inner)), span, depth);
        }
        self.cmp()
    }

    fn cmp(&mut self) -> Result<Ast<'s>, ExprError> {
        let membership = self.is_keyword(1, "in") || (self.is_keyword(1, "not") && self.is_keyword(2, "in"));
        if let (Tok::Word(key), true) = (self.peek().tok, membership) {
            return self.membership(key);
        }
        let left = self.sum()?;
        if let Tok::Op(op @ BinOp::Cmp(_)) = self.peek().tok {
            let op_at = self.bump().span.start;
            let right = self.sum()?;
            return self.binary(op, op_at, left, right);
        }
        if self.is_keyword(0, "in") || (self.is_keyword(0, "not") && self.is_keyword(1, "in")) {
            return Err(err(left.span.start, "only `account`, `payee`, `device` or `ip` can be looked up in a list"));
        }
        Ok(left)
    }

    fn membership(&mut self, key: &'s str) -> Result<Ast<'s>, ExprError> {
        let key_tok = self.bump();
        let negate = self.is_keyword(0, "not");
        if negate {
            self.bump();
        }
        self.bump(); // `in`
        let list_tok = self.bump();
        let list = match list_tok.tok {
            Tok::Word(w) if !KEYWORDS.contains(&w) => w,
            // A list may be named by digits alone (`lists/2024.txt`).
            Tok::Int(_) if self.text(list_tok).bytes().all(|b| b.is_ascii_digit()) => self.text(list_tok),
            _ => {
                let found = self.found(list_tok);
                return Err(err(list_tok.span.start, format!("expected a list name after `in`, found {found}")));
            }
        };
        let span = Span { start: key_tok.span.start, end: list_tok.span.end };
        let node = Node::In { key, key_at: key_tok.span.start, list, list_at: list_tok.span.start, negate };
        self.node(node, span, 1)
    }

    fn sum(&mut self) -> Result<Ast<'s>, ExprError> {
        let mut left = self.prod()?;
        while let Tok::Op(op @ (BinOp::Add | BinOp::Sub)) = self.peek().tok {
            let op_at = self.bump().span.start;
            let right = self.prod()?;
            left = self.binary(op, op_at, left, right)?;
        }
        Ok(left)
    }

    fn prod(&mut self) -> Result<Ast<'s>, ExprError> {
        let mut left = self.unary()?;
        while let Tok::Op(op @ (BinOp::Mul | BinOp::Div)) = self.peek().tok {
            let op_at = self.bump().span.start;
            let right = self.unary()?;
            left = self.binary(op, op_at, left, right)?;
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Ast<'s>, ExprError> {
        if self.peek().tok == Tok::Op(BinOp::Sub) {
            let start = self.bump().span.start;
            let inner = self.nested(start, Self::unary)?;
            let span = Span { start, end: inner.span.end };
            let depth = inner.depth + 1;
            return self.node(Node::Neg(Box::new(inner)), span, depth);
        }
        self.atom()
    }

    fn atom(&mut self) -> Result<Ast<'s>, ExprError> {
        let t = self.bump();
        let leaf = |node| Ok(Ast { node, span: t.span, depth: 1 });
        match t.tok {
            Tok::Int(v) => leaf(Node::Int(v)),
            Tok::Float(v) => leaf(Node::Float(v)),
            Tok::Word("true") => leaf(Node::Bool(true)),
            Tok::Word("false") => leaf(Node::Bool(false)),
            Tok::Word(w) if w.starts_with(|c: char| c.is_ascii_digit()) => {
                Err(err(t.span.start, format!("`{w}` is neither a number nor a feature name")))
            }
            Tok::Word(w) if !KEYWORDS.contains(&w) => leaf(Node::Name(w)),
            Tok::LParen => {
                let inner = self.nested(t.span.start, Self::or)?;
                let close = self.peek();
                match close.tok {
                    Tok::RParen => {
                        self.bump();
                        let span = Span { start: t.span.start, end: close.span.end };
                        let depth = inner.depth + 1;
                        self.node(inner.node, span, depth)
                    }
                    Tok::Eof => Err(err(t.span.start, "unclosed `(`: no matching `)`")),
                    _ => {
                        let found = self.found(close);
                        Err(err(close.span.start, format!("expected `)` to close the `(`, found {found}")))
                    }
                }
            }
            Tok::Eof => Err(err(t.span.start, "condition ends too early: expected a value")),
            _ => {
                let found = self.found(t);
                Err(err(t.span.start, format!("expected a value (a feature, a number, true or false), found {found}")))
            }
        }
    }
}

// ---------------------------------------------------------------- compiled form

/// Which transfer key a list lookup reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyField {
    Account,
    Payee,
    Device,
    Ip,
}

impl KeyField {
    fn from_name(name: &str) -> Option<KeyField> {
        Some(match name {
            "account" => KeyField::Account,
            "payee" => KeyField::Payee,
            "device" => KeyField::Device,
            "ip" => KeyField::Ip,
            _ => return None,
        })
    }

    #[inline]
    fn get<'k>(self, keys: &Keys<'k>) -> Option<&'k str> {
        match self {
            KeyField::Account => Some(keys.account),
            KeyField::Payee => Some(keys.payee),
            KeyField::Device => keys.device,
            KeyField::Ip => keys.ip,
        }
    }
}

/// What evaluation reads: one transfer's features, keys and event time (list
/// entries are in force for a span of event time), and the lists.
pub(crate) struct EvalCx<'a> {
    pub features: &'a FeatureVector,
    pub keys: &'a Keys<'a>,
    pub at_ms: i64,
    pub lists: &'a [List],
}

/// A compiled condition. The common shapes (`feature op constant`) have their
/// own variants so most comparisons are one match and one load.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum BoolExpr {
    Const(bool),
    Feature(u16),
    Not(Box<BoolExpr>),
    All(Box<[BoolExpr]>),
    Any(Box<[BoolExpr]>),
    IntFeatureCmp(u16, Cmp, i64),
    FloatFeatureCmp(u16, Cmp, f64),
    IntCmp(Cmp, Box<(IntExpr, IntExpr)>),
    FloatCmp(Cmp, Box<(FloatExpr, FloatExpr)>),
    BoolEq { negate: bool, sides: Box<(BoolExpr, BoolExpr)> },
    InList { key: KeyField, list: u16, negate: bool },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Arith {
    Add,
    Sub,
    Mul,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum IntExpr {
    Const(i64),
    Feature(u16),
    Neg(Box<IntExpr>),
    Bin(Arith, Box<(IntExpr, IntExpr)>),
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum FloatExpr {
    Const(f64),
    Feature(u16),
    FromInt(Box<IntExpr>),
    Neg(Box<FloatExpr>),
    Bin(Arith, Box<(FloatExpr, FloatExpr)>),
    Div(Box<(FloatExpr, FloatExpr)>),
}

#[cfg(test)]
thread_local! {
    /// Feature reads, counted in unit tests to prove short-circuiting.
    static READS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Read a feature the compiler typed as `kind`. A vector built against the
/// schema always has that kind; anything else is converted rather than
/// trusted to panic.
#[inline]
fn read(f: &FeatureVector, index: u16) -> Value {
    #[cfg(test)]
    READS.with(|r| r.set(r.get() + 1));
    f.get(usize::from(index))
}

#[inline]
fn read_int(f: &FeatureVector, index: u16) -> i64 {
    match read(f, index) {
        Value::Int(v) => v,
        Value::Float(v) => v as i64,
        Value::Bool(b) => i64::from(b),
    }
}

#[inline]
fn read_float(f: &FeatureVector, index: u16) -> f64 {
    read(f, index).as_f64()
}

#[inline]
fn read_bool(f: &FeatureVector, index: u16) -> bool {
    match read(f, index) {
        Value::Bool(b) => b,
        Value::Int(v) => v != 0,
        Value::Float(v) => v != 0.0,
    }
}

/// Division by zero gives 0.0: a ratio over an empty history
/// (`acct_sum_24h / acct_count_24h` for a new account) is "nothing", and a
/// rule should read it as 0 rather than see infinity or NaN.
#[inline]
fn div(a: f64, b: f64) -> f64 {
    if b == 0.0 {
        0.0
    } else {
        a / b
    }
}

impl Arith {
    #[inline]
    fn int(self, a: i64, b: i64) -> i64 {
        match self {
            Arith::Add => a.saturating_add(b),
            Arith::Sub => a.saturating_sub(b),
            Arith::Mul => a.saturating_mul(b),
        }
    }
    #[inline]
    fn float(self, a: f64, b: f64) -> f64 {
        match self {
            Arith::Add => a + b,
            Arith::Sub => a - b,
            Arith::Mul => a * b,
        }
    }
}

impl BoolExpr {
    #[inline]
    pub(crate) fn eval(&self, cx: &EvalCx<'_>) -> bool {
        match self {
            BoolExpr::IntFeatureCmp(f, op, v) => op.int(read_int(cx.features, *f), *v),
            BoolExpr::Feature(f) => read_bool(cx.features, *f),
            BoolExpr::All(items) => items.iter().all(|e| e.eval(cx)),
            BoolExpr::Any(items) => items.iter().any(|e| e.eval(cx)),
            BoolExpr::FloatFeatureCmp(f, op, v) => op.float(read_float(cx.features, *f), *v),
            BoolExpr::Const(b) => *b,
            BoolExpr::Not(e) => !e.eval(cx),
            BoolExpr::IntCmp(op, sides) => op.int(sides.0.eval(cx.features), sides.1.eval(cx.features)),
            BoolExpr::FloatCmp(op, sides) => op.float(sides.0.eval(cx.features), sides.1.eval(cx.features)),
            BoolExpr::BoolEq { negate, sides } => (sides.0.eval(cx) == sides.1.eval(cx)) != *negate,
            BoolExpr::InList { key, list, negate } => {
                // An absent device or IP is in no list.
                let found = match (key.get(cx.keys), cx.lists.get(usize::from(*list))) {
                    (Some(k), Some(l)) => l.contains(k, cx.at_ms),
                    _ => false,
                };
                found != *negate
            }
        }
    }
}

impl IntExpr {
    #[inline]
    fn eval(&self, f: &FeatureVector) -> i64 {
        match self {
            IntExpr::Const(v) => *v,
            IntExpr::Feature(i) => read_int(f, *i),
            IntExpr::Neg(e) => e.eval(f).saturating_neg(),
            IntExpr::Bin(op, s) => op.int(s.0.eval(f), s.1.eval(f)),
        }
    }
}

impl FloatExpr {
    #[inline]
    fn eval(&self, f: &FeatureVector) -> f64 {
        match self {
            FloatExpr::Const(v) => *v,
            FloatExpr::Feature(i) => read_float(f, *i),
            FloatExpr::FromInt(e) => e.eval(f) as f64,
            FloatExpr::Neg(e) => -e.eval(f),
            FloatExpr::Bin(op, s) => op.float(s.0.eval(f), s.1.eval(f)),
            FloatExpr::Div(s) => div(s.0.eval(f), s.1.eval(f)),
        }
    }
}

// ---------------------------------------------------------------- type checker

/// A checked expression of one of the three types.
#[derive(Debug)]
enum Typed {
    Bool(BoolExpr),
    Int(IntExpr),
    Float(FloatExpr),
}

impl Typed {
    fn kind(&self) -> FeatureType {
        match self {
            Typed::Bool(_) => FeatureType::Bool,
            Typed::Int(_) => FeatureType::Int,
            Typed::Float(_) => FeatureType::Float,
        }
    }

    fn into_float(self) -> Option<FloatExpr> {
        match self {
            Typed::Float(e) => Some(e),
            Typed::Int(IntExpr::Const(v)) => Some(FloatExpr::Const(v as f64)),
            Typed::Int(e) => Some(FloatExpr::FromInt(Box::new(e))),
            Typed::Bool(_) => None,
        }
    }
}

struct Checker<'a> {
    src: &'a str,
    lists: &'a [String],
    errors: Vec<ExprError>,
}

/// Compile one condition against the feature schema and the available list
/// names (their position is the list index). All independent problems are
/// returned, not only the first.
pub(crate) fn compile(src: &str, lists: &[String]) -> Result<BoolExpr, Vec<ExprError>> {
    let ast = parse(src).map_err(|e| vec![e])?;
    let mut checker = Checker { src, lists, errors: Vec::new() };
    let typed = checker.check(&ast);
    if !checker.errors.is_empty() {
        return Err(checker.errors);
    }
    match typed {
        Some(Typed::Bool(e)) => Ok(e),
        Some(other) => {
            let snippet = checker.snippet(&ast);
            let kind = other.kind().name();
            Err(vec![err(ast.span.start, format!("a condition must be true or false, but `{snippet}` is {kind}"))])
        }
        // Unreachable in practice: a failed check always records an error.
        None => Err(vec![err(ast.span.start, "invalid condition")]),
    }
}

impl Checker<'_> {
    /// The source text of a subexpression, on one line and shortened, for
    /// messages.
    fn snippet(&self, ast: &Ast<'_>) -> String {
        let raw = self.src.get(ast.span.start..ast.span.end).unwrap_or("");
        let text = raw.split_whitespace().collect::<Vec<_>>().join(" ");
        const MAX: usize = 40;
        if text.chars().count() <= MAX {
            text.to_string()
        } else {
            let head: String = text.chars().take(MAX - 3).collect();
            format!("{head}...")
        }
    }

    fn fail(&mut self, offset: usize, message: String) -> Option<Typed> {
        self.errors.push(err(offset, message));
        None
    }

    /// Check children before failing on the parent, so every independent
    /// problem is reported; a failed child yields `None` silently, so one
    /// mistake is not reported again by every enclosing operator.
    fn check(&mut self, ast: &Ast<'_>) -> Option<Typed> {
        match &ast.node {
            Node::Int(v) => Some(Typed::Int(IntExpr::Const(*v))),
            Node::Float(v) => Some(Typed::Float(FloatExpr::Const(*v))),
            Node::Bool(b) => Some(Typed::Bool(BoolExpr::Const(*b))),
            Node::Name(name) => self.name(name, ast.span.start),
            Node::Neg(inner) => match self.check(inner)? {
                Typed::Int(e) => Some(Typed::Int(fold_int_neg(e))),
                Typed::Float(e) => Some(Typed::Float(fold_float_neg(e))),
                Typed::Bool(_) => {
                    let s = self.snippet(inner);
                    self.fail(ast.span.start, format!("`-` needs a number, but `{s}` is bool"))
                }
            },
            Node::Not(inner) => match self.check(inner)? {
                Typed::Bool(e) => Some(Typed::Bool(fold_not(e))),
                other => {
                    let (s, k) = (self.snippet(inner), other.kind().name());
                    self.fail(ast.span.start, format!("`not` needs true or false, but `{s}` is {k}"))
                }
            },
            Node::Bin { op, op_at, left, right } => {
                let l = self.check(left);
                let r = self.check(right);
                let (l, r) = (l?, r?);
                self.binary(*op, *op_at, (left, l), (right, r))
            }
            Node::In { key, key_at, list, list_at, negate } => self.membership(key, *key_at, list, *list_at, *negate),
        }
    }

    fn name(&mut self, name: &str, at: usize) -> Option<Typed> {
        let feature =
            features::index_of(name).and_then(|index| Some((u16::try_from(index).ok()?, features::SCHEMA.get(index)?)));
        if let Some((i, def)) = feature {
            return Some(match def.kind {
                FeatureType::Bool => Typed::Bool(BoolExpr::Feature(i)),
                FeatureType::Int => Typed::Int(IntExpr::Feature(i)),
                FeatureType::Float => Typed::Float(FloatExpr::Feature(i)),
            });
        }
        if KEYS.contains(&name) {
            return self.fail(
                at,
                format!("`{name}` is a transfer key, usable only as `{name} in <list>` or `{name} not in <list>`"),
            );
        }
        let lower = name.to_ascii_lowercase();
        if KEYWORDS.contains(&lower.as_str()) {
            return self.fail(at, format!("keywords are lowercase: write `{lower}`, not `{name}`"));
        }
        let names = features::SCHEMA.iter().map(|d| d.name);
        let hint = did_you_mean(name, names).map(|s| format!("; did you mean `{s}`?")).unwrap_or_default();
        self.fail(at, format!("unknown feature `{name}`{hint}"))
    }

    fn membership(&mut self, key: &str, key_at: usize, list: &str, list_at: usize, negate: bool) -> Option<Typed> {
        let key_field = KeyField::from_name(key);
        if key_field.is_none() {
            let what = if features::index_of(key).is_some() { "a feature" } else { "not a transfer key" };
            self.errors.push(err(
                key_at,
                format!("only `account`, `payee`, `device` or `ip` can be looked up in a list; `{key}` is {what}"),
            ));
        }
        let list_index = self.lists.iter().position(|l| l == list);
        if list_index.is_none() {
            let hint = match did_you_mean(list, self.lists.iter().map(String::as_str)) {
                Some(s) => format!("; did you mean `{s}`?"),
                None if self.lists.is_empty() => " (the lists/ directory holds no lists)".to_string(),
                None => format!("; the lists are: {}", self.lists.join(", ")),
            };
            self.errors.push(err(list_at, format!("unknown list `{list}`: there is no lists/{list}.txt{hint}")));
        }
        let (key, list) = (key_field?, list_index?);
        let list = u16::try_from(list).ok()?;
        Some(Typed::Bool(BoolExpr::InList { key, list, negate }))
    }

    fn binary(&mut self, op: BinOp, op_at: usize, left: (&Ast<'_>, Typed), right: (&Ast<'_>, Typed)) -> Option<Typed> {
        let (lk, rk) = (left.1.kind(), right.1.kind());
        match op {
            BinOp::And | BinOp::Or => {
                let bad: Vec<&(&Ast<'_>, Typed)> =
                    [&left, &right].into_iter().filter(|s| s.1.kind() != FeatureType::Bool).collect();
                if let Some(first) = bad.first() {
                    let found: Vec<String> =
                        bad.iter().map(|s| format!("`{}` is {}", self.snippet(s.0), s.1.kind().name())).collect();
                    let message =
                        format!("`{}` needs true or false on both sides, but {}", op.symbol(), found.join(" and "));
                    return self.fail(first.0.span.start, message);
                }
                let (Typed::Bool(l), Typed::Bool(r)) = (left.1, right.1) else {
                    return None;
                };
                Some(Typed::Bool(if op == BinOp::And { fold_all(l, r) } else { fold_any(l, r) }))
            }
            BinOp::Cmp(cmp @ (Cmp::Eq | Cmp::Ne)) if lk == FeatureType::Bool || rk == FeatureType::Bool => {
                if lk != rk {
                    let (ls, rs) = (self.snippet(left.0), self.snippet(right.0));
                    let message =
                        format!("`{}` cannot compare {} `{ls}` with {} `{rs}`", cmp.symbol(), lk.name(), rk.name());
                    return self.fail(op_at, message);
                }
                let (Typed::Bool(l), Typed::Bool(r)) = (left.1, right.1) else {
                    return None;
                };
                Some(Typed::Bool(fold_bool_eq(cmp == Cmp::Ne, l, r)))
            }
            _ => {
                for side in [&left, &right] {
                    if side.1.kind() == FeatureType::Bool {
                        let what = if matches!(op, BinOp::Cmp(_)) { "compares numbers" } else { "needs numbers" };
                        let message = format!("`{}` {what}, but `{}` is bool", op.symbol(), self.snippet(side.0));
                        return self.fail(side.0.span.start, message);
                    }
                }
                Some(numeric(op, left.1, right.1))
            }
        }
    }
}

/// Suggest the closest candidate, if it is close enough to be a likely typo.
/// One integer literal alone (`1_000_000`, `300만`), as the lexer reads it.
pub(crate) fn int_literal(src: &str) -> Result<i64, String> {
    match lex(src).map_err(|e| e.message)?.as_slice() {
        [t, end] if end.tok == Tok::Eof => match t.tok {
            Tok::Int(v) if v > 0 => Ok(v),
            _ => Err(format!("`{src}` is not a positive whole number of won")),
        },
        _ => Err(format!("`{src}` is not an amount, e.g. `3_000_000` or `300만`")),
    }
}

pub(crate) fn did_you_mean<'c>(name: &str, candidates: impl Iterator<Item = &'c str>) -> Option<&'c str> {
    let lower = name.to_lowercase();
    candidates
        .map(|c| (c, strsim::jaro_winkler(&lower, &c.to_lowercase())))
        .filter(|&(_, score)| score >= 0.85)
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(c, _)| c)
}

/// Type and fold an arithmetic or comparison node whose sides are numbers.
fn numeric(op: BinOp, l: Typed, r: Typed) -> Typed {
    let both_int = l.kind() == FeatureType::Int && r.kind() == FeatureType::Int;
    match (op, both_int) {
        (BinOp::Cmp(cmp), true) => match (l, r) {
            (Typed::Int(l), Typed::Int(r)) => Typed::Bool(fold_int_cmp(cmp, l, r)),
            _ => Typed::Bool(BoolExpr::Const(false)),
        },
        (BinOp::Add | BinOp::Sub | BinOp::Mul, true) => match (l, r) {
            (Typed::Int(l), Typed::Int(r)) => Typed::Int(fold_int_arith(arith(op), l, r)),
            _ => Typed::Int(IntExpr::Const(0)),
        },
        _ => {
            let (Some(l), Some(r)) = (l.into_float(), r.into_float()) else {
                return Typed::Bool(BoolExpr::Const(false));
            };
            match op {
                BinOp::Cmp(cmp) => Typed::Bool(fold_float_cmp(cmp, l, r)),
                BinOp::Div => Typed::Float(fold_float_div(l, r)),
                _ => Typed::Float(fold_float_arith(arith(op), l, r)),
            }
        }
    }
}

fn arith(op: BinOp) -> Arith {
    match op {
        BinOp::Sub => Arith::Sub,
        BinOp::Mul => Arith::Mul,
        _ => Arith::Add,
    }
}

// ---------------------------------------------------------------- folding
//
// Conditions have no side effects and evaluation cannot fail, so folding
// constants and dropping decided `and`/`or` operands never changes a result.

fn fold_not(e: BoolExpr) -> BoolExpr {
    match e {
        BoolExpr::Const(b) => BoolExpr::Const(!b),
        BoolExpr::Not(inner) => *inner,
        BoolExpr::InList { key, list, negate } => BoolExpr::InList { key, list, negate: !negate },
        other => BoolExpr::Not(Box::new(other)),
    }
}

/// Flatten `a and (b and c)` into one n-ary node, so evaluation is a loop.
fn fold_all(l: BoolExpr, r: BoolExpr) -> BoolExpr {
    fold_junction(l, r, true)
}

fn fold_any(l: BoolExpr, r: BoolExpr) -> BoolExpr {
    fold_junction(l, r, false)
}

/// `is_all`: `and` (identity true, absorbing false); else `or`.
fn fold_junction(l: BoolExpr, r: BoolExpr, is_all: bool) -> BoolExpr {
    let mut items = Vec::new();
    for side in [l, r] {
        match side {
            BoolExpr::All(inner) if is_all => items.extend(inner.into_vec()),
            BoolExpr::Any(inner) if !is_all => items.extend(inner.into_vec()),
            other => items.push(other),
        }
    }
    let mut kept = Vec::with_capacity(items.len());
    for item in items {
        match item {
            BoolExpr::Const(b) if b == is_all => {}
            BoolExpr::Const(b) => return BoolExpr::Const(b),
            other => kept.push(other),
        }
    }
    match kept.len() {
        0 => BoolExpr::Const(is_all),
        1 => kept.pop().unwrap_or(BoolExpr::Const(is_all)),
        _ if is_all => BoolExpr::All(kept.into_boxed_slice()),
        _ => BoolExpr::Any(kept.into_boxed_slice()),
    }
}

fn fold_bool_eq(negate: bool, l: BoolExpr, r: BoolExpr) -> BoolExpr {
    match (l, r) {
        (BoolExpr::Const(a), BoolExpr::Const(b)) => BoolExpr::Const((a == b) != negate),
        // `x == true` is `x`, `x == false` is `not x`.
        (BoolExpr::Const(c), e) | (e, BoolExpr::Const(c)) => {
            if c != negate {
                e
            } else {
                fold_not(e)
            }
        }
        (l, r) => BoolExpr::BoolEq { negate, sides: Box::new((l, r)) },
    }
}

fn fold_int_neg(e: IntExpr) -> IntExpr {
    match e {
        IntExpr::Const(v) => IntExpr::Const(v.saturating_neg()),
        other => IntExpr::Neg(Box::new(other)),
    }
}

fn fold_float_neg(e: FloatExpr) -> FloatExpr {
    match e {
        FloatExpr::Const(v) => FloatExpr::Const(-v),
        other => FloatExpr::Neg(Box::new(other)),
    }
}

fn fold_int_arith(op: Arith, l: IntExpr, r: IntExpr) -> IntExpr {
    match (l, r) {
        (IntExpr::Const(a), IntExpr::Const(b)) => IntExpr::Const(op.int(a, b)),
        (l, r) => IntExpr::Bin(op, Box::new((l, r))),
    }
}

fn fold_float_arith(op: Arith, l: FloatExpr, r: FloatExpr) -> FloatExpr {
    match (l, r) {
        (FloatExpr::Const(a), FloatExpr::Const(b)) => FloatExpr::Const(op.float(a, b)),
        (l, r) => FloatExpr::Bin(op, Box::new((l, r))),
    }
}

fn fold_float_div(l: FloatExpr, r: FloatExpr) -> FloatExpr {
    match (l, r) {
        (FloatExpr::Const(a), FloatExpr::Const(b)) => FloatExpr::Const(div(a, b)),
        (l, r) => FloatExpr::Div(Box::new((l, r))),
    }
}

fn fold_int_cmp(op: Cmp, l: IntExpr, r: IntExpr) -> BoolExpr {
    match (l, r) {
        (IntExpr::Const(a), IntExpr::Const(b)) => BoolExpr::Const(op.int(a, b)),
        (IntExpr::Feature(f), IntExpr::Const(v)) => BoolExpr::IntFeatureCmp(f, op, v),
        (IntExpr::Const(v), IntExpr::Feature(f)) => BoolExpr::IntFeatureCmp(f, op.flip(), v),
        (l, r) => BoolExpr::IntCmp(op, Box::new((l, r))),
    }
}

fn fold_float_cmp(op: Cmp, l: FloatExpr, r: FloatExpr) -> BoolExpr {
    match (l, r) {
        (FloatExpr::Const(a), FloatExpr::Const(b)) => BoolExpr::Const(op.float(a, b)),
        (FloatExpr::Feature(f), FloatExpr::Const(v)) => BoolExpr::FloatFeatureCmp(f, op, v),
        (FloatExpr::Const(v), FloatExpr::Feature(f)) => BoolExpr::FloatFeatureCmp(f, op.flip(), v),
        (l, r) => BoolExpr::FloatCmp(op, Box::new((l, r))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::F;

    fn lists() -> Vec<String> {
        vec!["blocked_devices".to_string(), "mule_accounts".to_string()]
    }

    fn compile_ok(src: &str) -> BoolExpr {
        compile(src, &lists()).unwrap_or_else(|e| panic!("{src:?} failed: {e:?}"))
    }

    fn compile_err(src: &str) -> ExprError {
        match compile(src, &lists()) {
            Ok(e) => panic!("{src:?} compiled to {e:?}"),
            Err(mut errors) => errors.remove(0),
        }
    }

    /// A vector of zeros and falses, with some features set.
    fn vector(set: &[(F, Value)]) -> FeatureVector {
        FeatureVector::zeroed().with(set)
    }

    fn keys() -> Keys<'static> {
        Keys { account: "A1", payee: "088-1", device: None, ip: None }
    }

    fn eval(src: &str, f: &FeatureVector) -> bool {
        let l = [List::new("blocked_devices".into(), ["D9".to_string()]), List::new("mule_accounts".into(), [])];
        let k = keys();
        compile_ok(src).eval(&EvalCx { features: f, keys: &k, at_ms: 0, lists: &l })
    }

    fn int_literal(src: &str) -> Result<i64, ExprError> {
        match lex(src)?.first().map(|t| t.tok) {
            Some(Tok::Int(v)) => Ok(v),
            other => panic!("{src:?} lexed to {other:?}"),
        }
    }

    #[test]
    fn integer_literals_take_underscores_and_korean_units() {
        assert_eq!(int_literal("1_000_000"), Ok(1_000_000));
        assert_eq!(int_literal("300만"), Ok(3_000_000));
        assert_eq!(int_literal("1억"), Ok(100_000_000));
        assert_eq!(int_literal("1.5억"), Ok(150_000_000));
        assert_eq!(int_literal("2.5만"), Ok(25_000));
        assert_eq!(int_literal("1_000만"), Ok(10_000_000));
        assert_eq!(int_literal("9223372036854775807"), Ok(i64::MAX));
    }

    #[test]
    fn bad_number_literals_are_refused_with_a_position() {
        assert_eq!(int_literal("1__000").unwrap_err().offset, 1);
        assert_eq!(int_literal("1000_").unwrap_err().offset, 4);
        assert!(int_literal("9223372036854775808").unwrap_err().message.contains("too large"));
        assert!(int_literal("1.23456만").unwrap_err().message.contains("whole number of won"));
        assert!(int_literal("10000000000000억").unwrap_err().message.contains("too large"));
        let e = lex("amount > 300만원").unwrap_err();
        assert_eq!(e.offset, "amount > 300만".len());
        assert!(e.message.contains("without `원`"), "{}", e.message);
        assert_eq!(lex("3.").unwrap_err().offset, 1);
        assert!(lex("1.5x").unwrap_err().message.contains("after the number"));
        assert!(compile_err("amount > 3x").message.contains("neither a number nor a feature"));
    }

    #[test]
    fn floats_lex_as_floats() {
        let t = lex("0.25").unwrap();
        assert_eq!(t[0].tok, Tok::Float(0.25));
        assert_eq!(t[1].tok, Tok::Eof);
    }

    #[test]
    fn c_style_operators_get_a_hint() {
        assert!(compile_err("amount > 1 && is_night").message.contains("`and`"));
        assert!(compile_err("amount > 1 || is_night").message.contains("`or`"));
        assert!(compile_err("!is_night").message.contains("`not`"));
        assert!(compile_err("amount = 1").message.contains("`==`"));
    }

    #[test]
    fn precedence_is_not_then_and_then_or() {
        // true or (false and false) -> true; (true or false) and false -> false.
        let f = vector(&[]);
        assert!(eval("true or false and false", &f));
        assert!(!eval("(true or false) and false", &f));
        assert!(eval("not false and true", &f));
        assert!(eval("2 + 3 * 4 == 14", &f));
        assert!(eval("10 - 4 - 3 == 3", &f));
        assert!(eval("-2 * -3 == 6", &f));
    }

    #[test]
    fn constants_are_folded() {
        assert_eq!(compile_ok("1 + 2 == 3"), BoolExpr::Const(true));
        assert_eq!(compile_ok("amount >= 100만"), BoolExpr::IntFeatureCmp(F::AMOUNT as u16, Cmp::Ge, 1_000_000));
        assert_eq!(compile_ok("100만 <= amount"), BoolExpr::IntFeatureCmp(F::AMOUNT as u16, Cmp::Ge, 1_000_000));
        assert_eq!(compile_ok("true and is_night"), BoolExpr::Feature(F::IS_NIGHT as u16));
        assert_eq!(compile_ok("is_night == false"), BoolExpr::Not(Box::new(BoolExpr::Feature(F::IS_NIGHT as u16))));
        match compile_ok("is_night and is_weekend and payee_first_seen") {
            BoolExpr::All(items) => assert_eq!(items.len(), 3),
            other => panic!("not flattened: {other:?}"),
        }
    }

    #[test]
    fn int_and_float_comparisons() {
        let f = vector(&[(F::AMOUNT, Value::Int(9_007_199_254_740_993)), (F::AMOUNT_VS_MAX, Value::Float(2.5))]);
        // Int vs Int compares exactly even above 2^53, where f64 would round.
        assert!(eval("amount > 9_007_199_254_740_992", &f));
        assert!(eval("amount_vs_max > 2", &f));
        assert!(eval("amount_vs_max < 3", &f));
        assert!(eval("amount_vs_max == 2.5", &f));
        assert!(eval("amount > 1.5", &f));
    }

    #[test]
    fn arithmetic_saturates_and_division_by_zero_is_zero() {
        let f = vector(&[(F::AMOUNT, Value::Int(i64::MAX)), (F::ACCT_SUM_24H, Value::Int(500))]);
        assert!(eval("amount + 1 == amount", &f));
        assert!(eval("amount * 2 == amount", &f));
        assert!(eval("-amount - 10 < 0", &f));
        // acct_count_24h is 0: a ratio over no history reads as 0.
        assert!(eval("acct_sum_24h / acct_count_24h == 0", &f));
        assert!(eval("acct_sum_24h / 0 == 0.0", &f));
        assert!(eval("7 / 2 == 3.5", &f));
    }

    #[test]
    fn and_or_short_circuit() {
        let f = vector(&[(F::IS_NIGHT, Value::Bool(false))]);
        let reads = |src: &str| {
            READS.with(|r| r.set(0));
            eval(src, &f);
            READS.with(|r| r.get())
        };
        assert_eq!(reads("is_night and amount > 1 and device_age_min < 5"), 1);
        assert_eq!(reads("not is_night or amount > 1"), 1);
        assert_eq!(reads("is_night or amount > 1"), 2);
    }

    #[test]
    fn list_membership_and_absent_keys() {
        let f = vector(&[]);
        let l = [List::new("blocked_devices".into(), ["D9".to_string()]), List::new("mule_accounts".into(), [])];
        let e = compile_ok("device in blocked_devices");
        let ne = compile_ok("device not in blocked_devices");
        let run = |e: &BoolExpr, device| {
            let k = Keys { device, ..keys() };
            e.eval(&EvalCx { features: &f, keys: &k, at_ms: 0, lists: &l })
        };
        assert!(run(&e, Some("D9")));
        assert!(!run(&e, Some("D1")));
        assert!(!run(&e, None));
        assert!(!run(&ne, Some("D9")));
        assert!(run(&ne, None));
    }

    #[test]
    fn type_errors_name_the_types_and_point_at_the_culprit() {
        let e = compile_err("amount and payee_first_seen");
        assert_eq!(e.offset, 0);
        assert!(e.message.contains("`amount` is integer"), "{}", e.message);

        let e = compile_err("payee_first_seen > 3");
        assert_eq!(e.offset, 0);
        assert!(e.message.contains("`payee_first_seen` is bool"), "{}", e.message);

        let e = compile_err("is_night == 1");
        assert_eq!(e.offset, 9);
        assert!(e.message.contains("bool `is_night` with integer `1`"), "{}", e.message);

        let e = compile_err("amount + 1");
        assert!(e.message.contains("must be true or false") && e.message.contains("is integer"), "{}", e.message);

        let e = compile_err("not amount_vs_max");
        assert!(e.message.contains("is number"), "{}", e.message);

        // Snippets of multi-line conditions stay on one line.
        let e = compile_err("amount\n    + 1");
        assert!(e.message.contains("`amount + 1` is integer"), "{}", e.message);
    }

    #[test]
    fn every_independent_problem_is_reported() {
        let errors = compile("amout > 1 and devce_age_min < 3 and payee in mules", &lists()).unwrap_err();
        let offsets: Vec<usize> = errors.iter().map(|e| e.offset).collect();
        assert_eq!(offsets, vec![0, 14, 45]);
        assert!(errors[0].message.contains("did you mean `amount`?"));
        assert!(errors[1].message.contains("did you mean `device_age_min`?"));
        assert!(errors[2].message.contains("unknown list `mules`"));
    }

    #[test]
    fn syntax_errors() {
        let e = compile_err("(amount > 1 and is_night");
        assert_eq!((e.offset, e.message.contains("unclosed")), (0, true));
        let e = compile_err("amount > 1 is_night");
        assert_eq!(e.offset, 11);
        assert!(e.message.contains("found `is_night`"), "{}", e.message);
        let e = compile_err("amount >");
        assert_eq!(e.offset, 8);
        let e = compile_err("1 < amount < 3");
        assert!(e.message.contains("chained"), "{}", e.message);
        let e = compile_err("   ");
        assert!(e.message.contains("empty"), "{}", e.message);
        let e = compile_err("amount in mule_accounts");
        assert!(e.message.contains("`amount` is a feature"), "{}", e.message);
        let e = compile_err("AMOUNT > 1");
        assert!(e.message.contains("unknown feature `AMOUNT`; did you mean `amount`?"), "{}", e.message);
        let e = compile_err("is_night AND is_weekend");
        assert_eq!(e.offset, 9);
        assert!(e.message.contains("write `and`"), "{}", e.message);
        let e = compile_err("device > 1");
        assert!(e.message.contains("transfer key"), "{}", e.message);
    }

    #[test]
    fn nesting_is_bounded() {
        let deep = format!("{}is_night{}", "(".repeat(500), ")".repeat(500));
        assert!(compile_err(&deep).message.contains("nested too deeply"));
        let long = format!("amount{} > 1", " + amount".repeat(500));
        assert!(compile_err(&long).message.contains("nested too deeply"));
        let nots = format!("{}is_night", "not ".repeat(500));
        assert!(compile_err(&nots).message.contains("nested too deeply"));
        let ok = format!("{}is_night{}", "(".repeat(20), ")".repeat(20));
        compile_ok(&ok);
    }

    #[test]
    fn no_input_panics() {
        use rand::{Rng, SeedableRng};
        let pieces = [
            "amount",
            "is_night",
            "device",
            "in",
            "not",
            "and",
            "or",
            "(",
            ")",
            "<",
            "<=",
            "==",
            "!=",
            "+",
            "-",
            "*",
            "/",
            "1",
            "0",
            "1.5",
            "300만",
            "1_0",
            "_",
            ".",
            "mule_accounts",
            "true",
            "false",
            "원",
            "억",
            " ",
            "é",
            "\"",
            "=",
            "!",
            "&",
            "2024_x",
            "9999999999999999999",
            "amount_vs_max",
        ];
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        for _ in 0..20_000 {
            let n = rng.gen_range(0..12);
            let src: String = (0..n).map(|_| pieces[rng.gen_range(0..pieces.len())]).collect::<Vec<_>>().join(" ");
            let glued: String = src.replace(' ', "");
            for s in [src, glued] {
                match compile(&s, &lists()) {
                    Ok(e) => {
                        let (f, k) = (vector(&[]), keys());
                        e.eval(&EvalCx { features: &f, keys: &k, at_ms: 0, lists: &[] });
                    }
                    Err(errors) => {
                        assert!(!errors.is_empty());
                        for e in errors {
                            assert!(e.offset <= s.len() && s.is_char_boundary(e.offset), "{s:?}: {e:?}");
                        }
                    }
                }
            }
        }
    }
}
