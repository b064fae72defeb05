//! Just enough shell and template rendering to read what a pipeline file runs: its scripts split
//! into simple commands with variables expanded, and `{{ }}` / `${{ }}` placeholders filled with
//! sample values. Used by `pipeline_examples.rs`.
#![allow(dead_code)]

use std::collections::BTreeMap;

/// The simple commands of a shell script, each as its words after expansion from `vars` (an
/// unset variable becomes `<unset NAME>`, `$?` becomes `<status>`). Enough shell for the
/// examples: quotes, `$X` / `${X}`, `$(...)` (its commands are listed too), `;`, `&&`, `||`, `|`,
/// redirections as words of their own, `case` arms (`x)` is dropped), comments.
pub fn simple_commands(script: &str, vars: &BTreeMap<String, String>) -> Vec<Vec<String>> {
    let mut vars = vars.clone();
    let mut cmds: Vec<Vec<String>> = Vec::new();
    // `NAME=value` alone sets a shell variable for what follows.
    let assign = |cmd: &[String], vars: &mut BTreeMap<String, String>| {
        if let [only] = cmd {
            if let Some((k, v)) = only.split_once('=') {
                let ident = k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                if ident && !k.is_empty() {
                    vars.insert(k.to_owned(), v.to_owned());
                }
            }
        }
    };
    for line in script.replace("\\\n", " ").lines() {
        let mut words: Vec<String> = Vec::new();
        let mut cur = String::new();
        let mut in_word = false;
        let mut it = line.chars().peekable();
        let end_word = |cur: &mut String, in_word: &mut bool, words: &mut Vec<String>| {
            if *in_word {
                words.push(std::mem::take(cur));
                *in_word = false;
            }
        };
        while let Some(c) = it.next() {
            match c {
                '#' if !in_word => break,
                ' ' | '\t' => end_word(&mut cur, &mut in_word, &mut words),
                ';' | '|' | '&' => {
                    while it.peek() == Some(&c) {
                        it.next();
                    }
                    end_word(&mut cur, &mut in_word, &mut words);
                    if !words.is_empty() {
                        assign(&words, &mut vars);
                        cmds.push(std::mem::take(&mut words));
                    }
                }
                // A case arm's pattern (`$(` is read whole below).
                ')' => {
                    cur.clear();
                    in_word = false;
                    words.clear();
                }
                '>' => {
                    end_word(&mut cur, &mut in_word, &mut words);
                    let mut op = String::from(">");
                    while let Some(&n) = it.peek() {
                        if n == '>' || n == '&' || n.is_ascii_digit() {
                            op.push(n);
                            it.next();
                        } else {
                            break;
                        }
                    }
                    words.push(op);
                }
                '\'' => {
                    in_word = true;
                    for n in it.by_ref() {
                        if n == '\'' {
                            break;
                        }
                        cur.push(n);
                    }
                }
                '"' => {
                    in_word = true;
                    while let Some(n) = it.next() {
                        match n {
                            '"' => break,
                            '\\' => cur.extend(it.next()),
                            '$' => expand(&mut it, &vars, &mut cur, &mut cmds),
                            n => cur.push(n),
                        }
                    }
                }
                '$' => {
                    in_word = true;
                    expand(&mut it, &vars, &mut cur, &mut cmds);
                }
                '\\' => {
                    in_word = true;
                    cur.extend(it.next());
                }
                c => {
                    in_word = true;
                    cur.push(c);
                }
            }
        }
        end_word(&mut cur, &mut in_word, &mut words);
        if !words.is_empty() {
            assign(&words, &mut vars);
            cmds.push(words);
        }
    }
    cmds
}

/// After a `$`: a variable, `$?`, or a `$(...)` whose commands go to `cmds`.
fn expand(
    it: &mut std::iter::Peekable<std::str::Chars<'_>>,
    vars: &BTreeMap<String, String>,
    cur: &mut String,
    cmds: &mut Vec<Vec<String>>,
) {
    let name: String = match it.peek() {
        Some('{') => {
            it.next();
            it.by_ref().take_while(|&c| c != '}').collect()
        }
        Some('?') => {
            it.next();
            cur.push_str("<status>");
            return;
        }
        Some('(') => {
            it.next();
            let mut depth = 1;
            let mut inner = String::new();
            for c in it.by_ref() {
                depth += match c {
                    '(' => 1,
                    ')' => -1,
                    _ => 0,
                };
                if depth == 0 {
                    break;
                }
                inner.push(c);
            }
            cmds.extend(simple_commands(&inner, vars));
            cur.push_str("<output>");
            return;
        }
        _ => {
            let mut n = String::new();
            while let Some(&c) = it.peek() {
                if !(c.is_ascii_alphanumeric() || c == '_') {
                    break;
                }
                n.push(c);
                it.next();
            }
            n
        }
    };
    match vars.get(&name) {
        Some(v) => cur.push_str(v),
        None if name.is_empty() => cur.push('$'),
        None => cur.push_str(&format!("<unset {name}>")),
    }
}

/// Replace every `open … close` placeholder with `value(inner)`; unknown ones are problems.
pub fn substitute(
    text: &str,
    open: &str,
    close: &str,
    value: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<String>,
) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find(open) {
        out.push_str(&rest[..at]);
        let after = &rest[at + open.len()..];
        let Some(end) = after.find(close) else {
            problems.push(format!("unclosed {open} in {text:?}"));
            return out;
        };
        let key = after[..end].trim();
        match value(key) {
            Some(v) => out.push_str(&v),
            None => problems.push(format!("no sample value for {open} {key} {close}")),
        }
        rest = &after[end + close.len()..];
    }
    out.push_str(rest);
    out
}
