//! `--env-file`: dotenv files read the way python-dotenv reads them (which uvicorn
//! uses), without needing python-dotenv: `KEY=value` lines, `export ` prefixes,
//! `# comments`, single-quoted (`\\` and `\'` escapes) and double-quoted values
//! (backslash escapes, may span lines), and `${VAR}` / `${VAR:-default}` expansion from
//! the environment first, then the file's earlier keys. Variables already set in the
//! environment win over the file (python-dotenv's `override=False`). Unlike
//! python-dotenv, a line it would skip with a warning is an error here: a typo in a
//! secret's line should stop the start, not be half-applied.
//!
//! The master reads the file (again on SIGHUP) and hands the result to every worker it
//! starts; its own environment is left as it is.

/// The variables a worker gets on top of the master's environment: the env file's
/// (where not already set), then `--env KEY=VALUE` (which wins, as gunicorn's).
pub fn worker_environment(
    env_file: Option<&str>,
    env: &[String],
) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    if let Some(path) = env_file {
        let text = std::fs::read_to_string(path).map_err(|e| format!("--env-file {path}: {e}"))?;
        let lookup = |name: &str| std::env::var(name).ok();
        let bindings = parse(&text, lookup).map_err(|e| format!("--env-file {path}: {e}"))?;
        for (key, value) in bindings {
            if std::env::var_os(&key).is_none() {
                out.push((key, value));
            }
        }
    }
    for item in env {
        match item.split_once('=') {
            Some((key, value)) if !key.is_empty() && !key.contains('\0') => {
                out.push((key.to_string(), value.to_string()));
            }
            _ => return Err(format!("--env {item:?}: expected KEY=VALUE")),
        }
    }
    Ok(out)
}

/// The file's `KEY=value` bindings in order, values expanded. A key without `=` has
/// no value and is left out, as python-dotenv does.
pub fn parse(
    text: &str,
    environ: impl Fn(&str) -> Option<String>,
) -> Result<Vec<(String, String)>, String> {
    let mut reader = Reader {
        chars: text.chars().collect(),
        at: 0,
        line: 1,
    };
    let mut out: Vec<(String, String)> = Vec::new();
    loop {
        reader.skip_while(char::is_whitespace);
        if reader.peek().is_none() {
            return Ok(out);
        }
        let line = reader.line;
        let binding = reader
            .binding()
            .map_err(|why| format!("line {line}: {why}"))?;
        if let Some((key, Some(raw))) = binding {
            // The environment first, then the file's own earlier keys.
            let value = expand(&raw, |name| {
                environ(name).or_else(|| {
                    out.iter()
                        .rev()
                        .find(|(k, _)| k == name)
                        .map(|(_, v)| v.clone())
                })
            });
            out.retain(|(k, _)| *k != key);
            out.push((key, value));
        }
    }
}

struct Reader {
    chars: Vec<char>,
    at: usize,
    line: usize,
}

type Binding = Option<(String, Option<String>)>;

impl Reader {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.at).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.at += 1;
        if c == '\n' {
            self.line += 1;
        }
        Some(c)
    }

    fn skip_while(&mut self, keep: impl Fn(char) -> bool) {
        while self.peek().is_some_and(&keep) {
            self.next();
        }
    }

    fn rest_starts_with(&self, s: &str) -> bool {
        (self.at..)
            .zip(s.chars())
            .all(|(i, c)| self.chars.get(i) == Some(&c))
    }

    fn inline_space(c: char) -> bool {
        c.is_whitespace() && c != '\n' && c != '\r'
    }

    /// One statement; None for a comment line.
    fn binding(&mut self) -> Result<Binding, String> {
        if self.peek() == Some('#') {
            self.skip_while(|c| c != '\n' && c != '\r');
            return Ok(None);
        }
        if self.rest_starts_with("export")
            && self
                .chars
                .get(self.at + 6)
                .is_some_and(|c| Self::inline_space(*c))
        {
            self.at += 6;
            self.skip_while(Self::inline_space);
        }
        let key = self.key()?;
        self.skip_while(Self::inline_space);
        let value = if self.peek() == Some('=') {
            self.next();
            let spaced = self.peek().is_some_and(Self::inline_space);
            self.skip_while(Self::inline_space);
            if spaced && self.peek() == Some('#') {
                Some(String::new()) // `KEY= # comment`
            } else {
                Some(self.value()?)
            }
        } else {
            None
        };
        // What may follow: spaces, a comment, the end of the line.
        self.skip_while(Self::inline_space);
        if self.peek() == Some('#') {
            self.skip_while(|c| c != '\n' && c != '\r');
        }
        match self.peek() {
            None | Some('\n') | Some('\r') => Ok(Some((key, value))),
            Some(c) => Err(format!("unexpected {c:?} after the value of {key}")),
        }
    }

    fn key(&mut self) -> Result<String, String> {
        if self.peek() == Some('\'') {
            self.next();
            let mut key = String::new();
            loop {
                match self.next() {
                    Some('\'') if !key.is_empty() => return Ok(key),
                    Some('\'') | None => return Err("unterminated quoted key".into()),
                    Some(c) => key.push(c),
                }
            }
        }
        let mut key = String::new();
        while let Some(c) = self.peek() {
            if c == '=' || c == '#' || c.is_whitespace() {
                break;
            }
            key.push(c);
            self.next();
        }
        if key.is_empty() {
            return Err("expected KEY=VALUE".into());
        }
        Ok(key)
    }

    fn value(&mut self) -> Result<String, String> {
        match self.peek() {
            Some(q @ ('\'' | '"')) => {
                let start = self.line;
                self.next();
                let mut raw = String::new();
                loop {
                    match self.next() {
                        None => {
                            return Err(format!("quote {q} opened on line {start} is not closed"))
                        }
                        Some(c) if c == q => break,
                        Some('\\') => match self.next() {
                            Some(e) => {
                                raw.push('\\');
                                raw.push(e);
                            }
                            None => {
                                return Err(format!(
                                    "quote {q} opened on line {start} is not closed"
                                ))
                            }
                        },
                        Some(c) => raw.push(c),
                    }
                }
                Ok(unescape(&raw, q == '"'))
            }
            _ => {
                let mut raw = String::new();
                while let Some(c) = self.peek() {
                    if c == '\n' || c == '\r' {
                        break;
                    }
                    raw.push(c);
                    self.next();
                }
                // An inline comment needs whitespace before its `#`.
                let cut = raw
                    .char_indices()
                    .find(|&(i, c)| c == '#' && i > 0 && raw[..i].ends_with(char::is_whitespace))
                    .map_or(raw.len(), |(i, _)| i);
                Ok(raw[..cut].trim_end().to_string())
            }
        }
    }
}

/// Backslash escapes: in double quotes `\\ \' \" \a \b \f \n \r \t \v`, in single
/// quotes `\\` and `\'`; any other backslash stays as it is.
fn unescape(raw: &str, double: bool) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        let Some(e) = chars.next() else {
            out.push('\\');
            break;
        };
        let decoded = match (e, double) {
            ('\\', _) => Some('\\'),
            ('\'', _) => Some('\''),
            ('"', true) => Some('"'),
            ('a', true) => Some('\x07'),
            ('b', true) => Some('\x08'),
            ('f', true) => Some('\x0c'),
            ('n', true) => Some('\n'),
            ('r', true) => Some('\r'),
            ('t', true) => Some('\t'),
            ('v', true) => Some('\x0b'),
            _ => None,
        };
        match decoded {
            Some(d) => out.push(d),
            None => {
                out.push('\\');
                out.push(e);
            }
        }
    }
    out
}

/// `${NAME}` and `${NAME:-default}` replaced (a missing NAME gives the default, or "");
/// anything else, `$NAME` included, stays literal, as in python-dotenv.
fn expand(value: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match variable(after) {
            Some((name, default, used)) => {
                out.push_str(&lookup(name).unwrap_or_else(|| default.unwrap_or("").to_string()));
                rest = &after[used..];
            }
            None => {
                out.push('$');
                rest = &rest[start + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// After `${`: the name, the default, and how many bytes up to and with the `}`.
fn variable(after: &str) -> Option<(&str, Option<&str>, usize)> {
    let name_end = after.find(['}', ':'])?;
    let name = &after[..name_end];
    if after[name_end..].starts_with('}') {
        return Some((name, None, name_end + 1));
    }
    let default_start = name_end + 2;
    if !after[name_end..].starts_with(":-") {
        return None;
    }
    let close = after[default_start..].find('}')? + default_start;
    Some((name, Some(&after[default_start..close]), close + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "HOME_DIR").then(|| "/home/me".to_string())
    }

    #[test]
    fn python_dotenv_syntax() {
        let text = "\
# a comment
export A=1
B = two words   # trailing comment
C='single ${HOME_DIR} \\' q'
D=\"double\\nline ${HOME_DIR}\"
E=${MISSING:-fallback}/x
F=${A}${B}
G=#not-a-comment
H= # empty
I
'J K'=quoted key
L=\"multi
line\"
M=$HOME_DIR ${:x}
";
        let got = parse(text, env).unwrap();
        let want = [
            ("A", "1"),
            ("B", "two words"),
            ("C", "single /home/me ' q"),
            ("D", "double\nline /home/me"),
            ("E", "fallback/x"),
            ("F", "1two words"),
            ("G", "#not-a-comment"),
            ("H", ""),
            ("J K", "quoted key"),
            ("L", "multi\nline"),
            ("M", "$HOME_DIR ${:x}"),
        ];
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn errors_name_the_line() {
        assert_eq!(
            parse("A=1\nB=\"open\n", env).unwrap_err(),
            "line 2: quote \" opened on line 2 is not closed"
        );
        assert!(parse("A=1\n=2\n", env).unwrap_err().starts_with("line 2:"));
        assert!(parse("A='x' junk\n", env)
            .unwrap_err()
            .starts_with("line 1:"));
    }
}
