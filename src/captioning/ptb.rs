//! The tokenisation the COCO caption evaluation applies before scoring:
//! Stanford's PTBTokenizer (`-preserveLines -lowerCase`), then the
//! punctuation tokens dropped.
//!
//! The reference is a Java program (stanford-corenlp 3.4.1) run as a
//! subprocess; no Rust crate reproduces it, and a JVM is not something a
//! captioning run should need, so the rules that matter for captions and
//! reports are written out here and checked token for token against the jar
//! on `tests/fixtures/captions/coco_eval_reference.json`:
//!
//! - lower case; whitespace separates;
//! - brackets become `-lrb-`/`-rrb-`, `-lsb-`/`-rsb-`, `-lcb-`/`-rcb-`
//!   and are *kept*: the evaluation's punctuation list holds them in upper
//!   case, which the lower-cased output never matches;
//! - `, ; : ? ! " ` and single quotes around a word, `...`, `--` and a
//!   word's final period are split off and dropped, except the periods of
//!   abbreviations (`e.g.`, `u.s.`, `dr.`, `etc.`);
//! - numbers keep their inner `.`, `,` and `:` (`2.5`, `1,000`, `3:00`);
//!   `%` and `$` are tokens of their own;
//! - clitics split as in the Penn Treebank: `does n't`, `ca n't`, `wo n't`,
//!   `can not`, `there 's`, `i 'm`, `they 'll`, `we 've`, `'re`, `'d`;
//! - hyphens and slashes inside a word stay (`top-left`, `t7-t9`, `and/or`).
//!
//! Anything outside these rules (rare Unicode punctuation, URLs) is split
//! on whitespace only.

/// Tokens the COCO evaluation drops after tokenising (`PUNCTUATIONS` in
/// pycocoevalcap's `ptbtokenizer.py`), as the tokenizer writes them.
const DROPPED: &[&str] = &[
    "''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--",
    "...", ";",
];

/// Abbreviations whose final period belongs to the word.
const ABBREVIATIONS: &[&str] = &[
    "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "vs", "etc", "inc", "ltd", "co", "corp",
    "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec", "fig",
];

/// The caption as the COCO evaluation scores it: PTB tokens, lower case,
/// punctuation dropped, joined by single spaces.
pub fn tokenize(text: &str) -> String {
    let mut out: Vec<String> = Vec::new();
    for chunk in text.split_whitespace() {
        split_chunk(&chunk.to_lowercase(), &mut out);
    }
    out.retain(|t| !t.is_empty() && !DROPPED.contains(&t.as_str()));
    out.join(" ")
}

fn bracket(c: char) -> Option<&'static str> {
    Some(match c {
        '(' => "-lrb-",
        ')' => "-rrb-",
        '[' => "-lsb-",
        ']' => "-rsb-",
        '{' => "-lcb-",
        '}' => "-rcb-",
        _ => return None,
    })
}

/// Characters split off either end of a word as tokens of their own.
fn is_edge_punct(c: char) -> bool {
    matches!(
        c,
        ',' | ';' | ':' | '?' | '!' | '"' | '\'' | '`' | '%' | '$' | '.' | '-'
    ) || bracket(c).is_some()
}

fn split_chunk(chunk: &str, out: &mut Vec<String>) {
    // `--` and `...` separate words wherever they stand
    for (i, piece) in chunk.split("--").enumerate() {
        if i > 0 {
            out.push("--".into());
        }
        for (j, part) in piece.split("...").enumerate() {
            if j > 0 {
                out.push("...".into());
            }
            split_word(part, out);
        }
    }
}

fn split_word(word: &str, out: &mut Vec<String>) {
    let chars: Vec<char> = word.chars().collect();
    let (mut start, mut end) = (0, chars.len());
    let mut head = Vec::new();
    while start < end && is_edge_punct(chars[start]) && !starts_number(&chars[start..end]) {
        if chars[start] == '\'' && is_clitic(&chars[start..end]) {
            break;
        }
        head.push(edge_token(chars[start]));
        start += 1;
    }
    let mut tail = Vec::new();
    while end > start && is_edge_punct(chars[end - 1]) {
        let c = chars[end - 1];
        if c == '.' && keeps_period(&chars[start..end]) {
            break;
        }
        tail.push(edge_token(c));
        end -= 1;
    }
    out.extend(head);
    let core: String = chars[start..end].iter().collect();
    split_inner(&core, out);
    out.extend(tail.into_iter().rev());
}

fn edge_token(c: char) -> String {
    match (c, bracket(c)) {
        (_, Some(b)) => b.into(),
        // the tokenizer writes double quotes as `` and '', both dropped
        ('"', None) => "''".into(),
        (c, None) => c.to_string(),
    }
}

/// `.5` and `-3` begin numbers rather than punctuation.
fn starts_number(s: &[char]) -> bool {
    matches!(s, ['.' | '-', d, ..] if d.is_ascii_digit())
}

fn is_clitic(s: &[char]) -> bool {
    let rest: String = s.iter().collect();
    matches!(rest.as_str(), "'s" | "'m" | "'d" | "'ll" | "'re" | "'ve")
}

/// A word ending in a period that keeps it: letter-period runs (`e.g.`,
/// `u.s.`) and the listed abbreviations (`dr.`).
fn keeps_period(s: &[char]) -> bool {
    let w: String = s.iter().collect();
    let Some(stem) = w.strip_suffix('.') else {
        return false;
    };
    if ABBREVIATIONS.contains(&stem) {
        return true;
    }
    let parts: Vec<&str> = stem.split('.').collect();
    parts.len() >= 2
        && parts
            .iter()
            .all(|p| p.chars().count() == 1 && p.chars().all(char::is_alphabetic))
}

/// Splits clitics and brackets inside a word whose edges are clean.
fn split_inner(word: &str, out: &mut Vec<String>) {
    if word.is_empty() {
        return;
    }
    // brackets inside a word (`t7(9)`) separate it
    if let Some(pos) = word.find(|c: char| bracket(c).is_some()) {
        let c = word[pos..].chars().next().expect("found");
        split_word(&word[..pos], out);
        out.push(edge_token(c));
        split_word(&word[pos + c.len_utf8()..], out);
        return;
    }
    if word == "cannot" {
        out.push("can".into());
        out.push("not".into());
        return;
    }
    for clitic in ["n't", "'s", "'m", "'d", "'ll", "'re", "'ve"] {
        if let Some(stem) = word.strip_suffix(clitic)
            && !stem.is_empty()
        {
            out.push(stem.into());
            out.push(clitic.into());
            return;
        }
    }
    out.push(word.into());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rules_on_their_own() {
        assert_eq!(tokenize("Heart size is normal."), "heart size is normal");
        assert_eq!(tokenize("Shirts (two)!"), "shirts -lrb- two -rrb-");
        assert_eq!(tokenize("e.g. a 2.5 cm nodule"), "e.g. a 2.5 cm nodule");
        assert_eq!(tokenize("can't, won't"), "ca n't wo n't");
        assert_eq!(tokenize("It's $20 -- 5%"), "it 's $ 20 5 %");
        assert_eq!(tokenize("stable... unchanged"), "stable unchanged");
        assert_eq!(tokenize("an 'old' coat"), "an old coat");
        assert_eq!(tokenize("  "), "");
    }
}
