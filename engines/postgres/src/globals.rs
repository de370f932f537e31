//! The globals of a whole-server backup: `pg_dumpall --globals-only`'s script (roles, their
//! settings and memberships, tablespaces), and the rewrite that replays it onto a server that
//! already has roles of its own.
//!
//! Roles and tablespaces that exist on the target are kept as they are: their `CREATE`, `ALTER`,
//! `COMMENT` and `SECURITY LABEL` statements are left out, so an existing role's password (the
//! restoring user's above all) is never changed. Memberships are replayed (a membership that
//! already exists is only a NOTICE on PostgreSQL 13 to 18). The script is replayed as two: the
//! roles in one transaction, so a failure creates no role, then the tablespaces (`CREATE
//! TABLESPACE` cannot run in a transaction block). Both keep the script's comments, its
//! `SET`s and its psql meta-commands (`\restrict`).
//!
//! The script is handled as bytes: it is in the source server's encoding, and only its ASCII
//! structure (quotes, semicolons, keywords) is read.

use std::collections::HashSet;

/// The format recorded for the globals object.
pub const FORMAT: runner_core::DumpFormat = runner_core::DumpFormat {
    name: "pg_dumpall-globals",
    extension: "sql",
};

/// The sentence recorded when the backing-up account cannot read role passwords; its start is
/// looked for in the manifest on restore.
pub const NO_PASSWORDS: &str = "role passwords: DB_USERNAME cannot read pg_authid (not a superuser, as on managed services), so roles are backed up without passwords (pg_dumpall --no-role-passwords); set them again after a restore";
const NO_PASSWORDS_PREFIX: &str = "role passwords:";

/// Whether a set's manifest says its roles were backed up without passwords.
pub fn backed_up_without_passwords(manifest: &runner_core::Manifest) -> bool {
    let said = |s: &String| s.starts_with(NO_PASSWORDS_PREFIX);
    manifest.warnings.iter().any(said)
        || manifest
            .set
            .as_ref()
            .is_some_and(|set| set.skipped.iter().any(said))
}

/// What the target server already has, and what the restoring role may do.
#[derive(Debug, Clone, Default)]
pub struct Target {
    /// The restoring role (`current_user`), in the server's encoding.
    pub current_user: Vec<u8>,
    pub superuser: bool,
    /// The role attributes a restoring role that is not a superuser may set, by name
    /// (`CREATEDB`): before PostgreSQL 16 a CREATEROLE role sets CREATEDB and CREATEROLE only;
    /// from 16 it sets those it has itself, SUPERUSER never. Setting another one, even to its
    /// `NO…` form, is refused.
    pub may_set: Vec<&'static str>,
    pub roles: HashSet<Vec<u8>>,
    pub tablespaces: HashSet<Vec<u8>>,
}

/// The script to replay, and what it will do.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Replay {
    /// Roles, their settings and memberships, and what else is not a tablespace's, in one
    /// transaction.
    pub roles_script: Vec<u8>,
    /// The tablespace statements, run after the roles; `None` when there are none.
    pub tablespaces_script: Option<Vec<u8>>,
    /// Roles the script creates, in its order.
    pub created: Vec<String>,
    /// Roles of the backup that exist on the target and are left as they are.
    pub kept: Vec<String>,
    pub tablespaces_created: Vec<String>,
    pub tablespaces_kept: Vec<String>,
    /// Created roles that can log in but get no password from the script.
    pub without_password: Vec<String>,
    /// What the script cannot restore exactly on this target, one sentence each.
    pub warnings: Vec<String>,
    /// psql meta-commands that `pg_dumpall --globals-only` never writes (it writes only
    /// `\restrict` and `\unrestrict`): a script holding any is not replayed.
    pub refused: Vec<String>,
}

/// `\restrict KEY` / `\unrestrict KEY`, which pg_dumpall writes from the 2025 minor releases on
/// so that psql refuses any other meta-command in between.
fn is_restrict_command(line: &[u8]) -> bool {
    let mut words = line.trim_ascii().split(|b| b.is_ascii_whitespace());
    matches!(words.next(), Some(b"\\restrict" | b"\\unrestrict"))
        && words.filter(|w| !w.is_empty()).count() == 1
}

/// Rewrites `script` (from `pg_dumpall --globals-only`) for `target`.
pub fn replay(script: &[u8], target: &Target) -> Replay {
    let exists_role = |name: &[u8]| name == target.current_user || target.roles.contains(name);
    let mut out = Replay::default();
    let mut roles_out = Vec::with_capacity(script.len() + 32);
    let mut tablespaces_out = Vec::new();
    let mut any_tablespace = false;
    let mut in_transaction = false;
    let mut login: Vec<(Vec<u8>, bool, bool)> = Vec::new(); // (role, LOGIN, PASSWORD)
    let mut grantors: Vec<String> = Vec::new();
    for piece in pieces(script) {
        let stmt = match piece {
            Piece::Line(line) => {
                let meta = line.trim_ascii_start().starts_with(b"\\");
                if meta && !is_restrict_command(line) {
                    push_once(&mut out.refused, line.trim_ascii());
                }
                // A meta-command (`\unrestrict`) ends the transaction: its SQL is done.
                if in_transaction && meta {
                    roles_out.extend_from_slice(b"COMMIT;\n");
                    in_transaction = false;
                }
                roles_out.extend_from_slice(line);
                tablespaces_out.extend_from_slice(line);
                continue;
            }
            Piece::Statement(s) => s,
        };
        let toks = tokens(stmt);
        // psql runs a backslash outside quotes as a meta-command, wherever it is.
        if toks.iter().any(|t| t.tok == Tok::Other(b'\\')) {
            push_once(&mut out.refused, stmt.trim_ascii());
        }
        let kind = classify(&toks);
        let mut text = stmt.to_vec();
        match &kind {
            Kind::CreateRole(name) => {
                if exists_role(name) {
                    push_once(&mut out.kept, name);
                    continue;
                }
                push_once(&mut out.created, name);
            }
            Kind::Role(name) => {
                if exists_role(name) {
                    continue;
                }
                if let Some(with) = role_attributes(&toks) {
                    let (login_attr, password) = login_and_password(&toks[with..]);
                    match login.iter_mut().find(|(r, _, _)| r == name) {
                        Some(entry) => {
                            entry.1 |= login_attr;
                            entry.2 |= password;
                        }
                        None => login.push((name.clone(), login_attr, password)),
                    }
                    let Some((rewritten, dropped)) = drop_attributes(stmt, &toks[with..], target)
                    else {
                        continue;
                    };
                    if !dropped.is_empty() {
                        out.warnings.push(format!(
                            "role \"{}\" is created without {}, which it has in the backup: DB_USERNAME is not a superuser on the target and may not give {}",
                            show(name),
                            dropped.join(", "),
                            if dropped.len() == 1 { "it" } else { "them" },
                        ));
                    }
                    text = rewritten;
                }
            }
            Kind::Membership => {
                if !target.superuser {
                    if let Some((rewritten, grantor)) = drop_foreign_grantor(stmt, &toks, target) {
                        push_once(&mut grantors, &grantor);
                        text = rewritten;
                    }
                }
            }
            Kind::CreateTablespace(name) => {
                if target.tablespaces.contains(name) {
                    push_once(&mut out.tablespaces_kept, name);
                    continue;
                }
                push_once(&mut out.tablespaces_created, name);
            }
            Kind::Tablespace(name) => {
                if target.tablespaces.contains(name) {
                    continue;
                }
            }
            Kind::Set | Kind::Other => {}
        }
        match kind {
            Kind::Set => {
                roles_out.extend_from_slice(&text);
                tablespaces_out.extend_from_slice(&text);
            }
            Kind::CreateTablespace(_) | Kind::Tablespace(_) => {
                any_tablespace = true;
                tablespaces_out.extend_from_slice(&text);
            }
            _ => {
                if !in_transaction {
                    // After the leading SETs: `default_transaction_read_only = off` first.
                    roles_out.extend_from_slice(b"BEGIN;\n");
                    in_transaction = true;
                }
                roles_out.extend_from_slice(&text);
            }
        }
    }
    if in_transaction {
        roles_out.extend_from_slice(b"\nCOMMIT;\n");
    }
    out.without_password = login
        .iter()
        .filter(|(r, l, p)| *l && !*p && out.created.contains(&show(r)))
        .map(|(r, _, _)| show(r))
        .collect();
    if !grantors.is_empty() {
        out.warnings.push(format!(
            "role memberships granted by {} are recorded as granted by DB_USERNAME: only a superuser may name another grantor (GRANTED BY)",
            grantors
                .iter()
                .map(|g| format!("\"{g}\""))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    out.roles_script = roles_out;
    out.tablespaces_script = any_tablespace.then_some(tablespaces_out);
    out
}

fn show(name: &[u8]) -> String {
    String::from_utf8_lossy(name).into_owned()
}

fn push_once(list: &mut Vec<String>, name: &[u8]) {
    let name = show(name);
    if !list.contains(&name) {
        list.push(name);
    }
}

/// Replaces each `PASSWORD '…'` value in `text` (a tool's error message quoting a statement)
/// with `***`.
pub fn redact_passwords(text: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while let Some(found) = lower[i..].find("password") {
        let at = i + found + "password".len();
        out.push_str(&text[i..at]);
        i = at;
        let rest = &text[at..];
        let spaces = rest.len() - rest.trim_start().len();
        let rest = &rest[spaces..];
        let quote_at = if rest.starts_with('\'') {
            Some(0)
        } else if rest.starts_with("E'") || rest.starts_with("e'") {
            Some(1)
        } else {
            None
        };
        if let Some(q) = quote_at {
            out.push_str(&text[i..i + spaces + q + 1]);
            let body = i + spaces + q + 1;
            let end = skip_string(text.as_bytes(), body, q == 1);
            out.push_str("***");
            // The closing quote, when the value is complete; a cut-off value is masked to the end.
            if end <= text.len() && end > body && text.as_bytes()[end - 1] == b'\'' {
                out.push('\'');
            }
            i = end.min(text.len());
        }
    }
    out.push_str(&text[i..]);
    out
}

// ---- The script's structure ------------------------------------------------------------

/// One piece of the script; the pieces in order are the script.
#[derive(Debug, PartialEq)]
enum Piece<'a> {
    /// A blank line, a comment line or a psql meta-command line (`\restrict`, `\connect`).
    Line(&'a [u8]),
    /// One SQL statement, up to and including its `;`.
    Statement(&'a [u8]),
}

fn pieces(script: &[u8]) -> Vec<Piece<'_>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < script.len() {
        let line_end = script[i..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(script.len(), |p| i + p + 1);
        let line = &script[i..line_end];
        let first = line.iter().position(|b| !b.is_ascii_whitespace());
        let is_line = match first {
            None => true,
            Some(f) => line[f] == b'\\' || line[f..].starts_with(b"--"),
        };
        if is_line {
            out.push(Piece::Line(line));
            i = line_end;
        } else {
            let end = statement_end(script, i);
            out.push(Piece::Statement(&script[i..end]));
            i = end;
        }
    }
    out
}

fn is_ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

fn is_ident_char(b: u8) -> bool {
    is_ident_start(b) || b.is_ascii_digit() || b == b'$'
}

/// The end (after the `;`) of the statement starting at `i`, or the script's end.
fn statement_end(s: &[u8], mut i: usize) -> usize {
    while i < s.len() {
        match s[i] {
            b';' => return i + 1,
            b'\'' => i = skip_string(s, i + 1, is_escape_prefix(s, i)),
            b'"' => i = skip_quoted_ident(s, i + 1),
            b'-' if s.get(i + 1) == Some(&b'-') => {
                i = s[i..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(s.len(), |p| i + p)
            }
            b'/' if s.get(i + 1) == Some(&b'*') => i = skip_block_comment(s, i + 2),
            b'$' if i == 0 || !is_ident_char(s[i - 1]) => match dollar_tag(s, i) {
                Some(tag_end) => i = skip_dollar_string(s, i, tag_end),
                None => i += 1,
            },
            _ => i += 1,
        }
    }
    s.len()
}

/// Whether the quote at `i` opens an `E'…'` string (backslash escapes).
fn is_escape_prefix(s: &[u8], i: usize) -> bool {
    i >= 1 && matches!(s[i - 1], b'E' | b'e') && (i < 2 || !is_ident_char(s[i - 2]))
}

/// Past the closing quote of a string whose body starts at `i`.
fn skip_string(s: &[u8], mut i: usize, backslash_escapes: bool) -> usize {
    while i < s.len() {
        match s[i] {
            b'\\' if backslash_escapes => i += 2,
            b'\'' if s.get(i + 1) == Some(&b'\'') => i += 2,
            b'\'' => return i + 1,
            _ => i += 1,
        }
    }
    s.len()
}

fn skip_quoted_ident(s: &[u8], mut i: usize) -> usize {
    while i < s.len() {
        match s[i] {
            b'"' if s.get(i + 1) == Some(&b'"') => i += 2,
            b'"' => return i + 1,
            _ => i += 1,
        }
    }
    s.len()
}

fn skip_block_comment(s: &[u8], mut i: usize) -> usize {
    let mut depth = 1;
    while i < s.len() {
        if s[i..].starts_with(b"/*") {
            depth += 1;
            i += 2;
        } else if s[i..].starts_with(b"*/") {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return i;
            }
        } else {
            i += 1;
        }
    }
    s.len()
}

/// The end of a `$tag$` opening at `i`.
fn dollar_tag(s: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    if j < s.len() && s[j].is_ascii_digit() {
        return None; // a parameter ($1)
    }
    while j < s.len() && (is_ident_start(s[j]) || s[j].is_ascii_digit()) {
        j += 1;
    }
    (s.get(j) == Some(&b'$')).then_some(j + 1)
}

fn skip_dollar_string(s: &[u8], open: usize, body: usize) -> usize {
    let tag = &s[open..body];
    s[body..]
        .windows(tag.len())
        .position(|w| w == tag)
        .map_or(s.len(), |p| body + p + tag.len())
}

// ---- Tokens and statement kinds ------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    /// A keyword or unquoted identifier, ASCII-lowercased as the server folds it.
    Word(Vec<u8>),
    /// A double-quoted identifier, unescaped.
    Quoted(Vec<u8>),
    /// A string constant.
    Str,
    /// Anything else: punctuation, a number.
    Other(u8),
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    start: usize,
    end: usize,
}

impl Token {
    fn is(&self, word: &str) -> bool {
        matches!(&self.tok, Tok::Word(w) if w == word.as_bytes())
    }

    /// The identifier this token names (a keyword-like word too: `CREATE ROLE app`).
    fn name(&self) -> Option<Vec<u8>> {
        match &self.tok {
            Tok::Word(w) | Tok::Quoted(w) => Some(w.clone()),
            _ => None,
        }
    }
}

fn tokens(s: &[u8]) -> Vec<Token> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        let start = i;
        let tok = if c.is_ascii_whitespace() {
            i += 1;
            continue;
        } else if c == b'-' && s.get(i + 1) == Some(&b'-') {
            i = s[i..]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(s.len(), |p| i + p);
            continue;
        } else if c == b'/' && s.get(i + 1) == Some(&b'*') {
            i = skip_block_comment(s, i + 2);
            continue;
        } else if matches!(c, b'E' | b'e') && s.get(i + 1) == Some(&b'\'') {
            i = skip_string(s, i + 2, true);
            Tok::Str
        } else if c == b'\'' {
            i = skip_string(s, i + 1, false);
            Tok::Str
        } else if c == b'"' {
            i = skip_quoted_ident(s, i + 1);
            let inner = &s[start + 1..i.saturating_sub(1).max(start + 1)];
            Tok::Quoted(unescape_quoted(inner))
        } else if c == b'$' && dollar_tag(s, i).is_some() {
            let body = dollar_tag(s, i).expect("checked");
            i = skip_dollar_string(s, i, body);
            Tok::Str
        } else if is_ident_start(c) {
            while i < s.len() && is_ident_char(s[i]) {
                i += 1;
            }
            Tok::Word(s[start..i].to_ascii_lowercase())
        } else {
            i += 1;
            Tok::Other(c)
        };
        out.push(Token { tok, start, end: i });
    }
    out
}

fn unescape_quoted(inner: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(inner.len());
    let mut i = 0;
    while i < inner.len() {
        out.push(inner[i]);
        i += if inner[i] == b'"' && inner.get(i + 1) == Some(&b'"') {
            2
        } else {
            1
        };
    }
    out
}

#[derive(Debug, Clone, PartialEq)]
enum Kind {
    CreateRole(Vec<u8>),
    /// ALTER, COMMENT ON or SECURITY LABEL ON a role.
    Role(Vec<u8>),
    /// GRANT role TO role.
    Membership,
    CreateTablespace(Vec<u8>),
    /// ALTER, COMMENT ON, SECURITY LABEL ON, GRANT or REVOKE on a tablespace.
    Tablespace(Vec<u8>),
    Set,
    Other,
}

fn classify(t: &[Token]) -> Kind {
    let is = |i: usize, w: &str| t.get(i).is_some_and(|x| x.is(w));
    let name = |i: usize| t.get(i).and_then(Token::name);
    let role_word = |i: usize| is(i, "role") || is(i, "user") || is(i, "group");
    if is(0, "set") {
        return Kind::Set;
    }
    if is(0, "create") && role_word(1) {
        return name(2).map_or(Kind::Other, Kind::CreateRole);
    }
    if is(0, "create") && is(1, "tablespace") {
        return name(2).map_or(Kind::Other, Kind::CreateTablespace);
    }
    if is(0, "alter") && role_word(1) {
        // `ALTER ROLE ALL SET …` concerns every role, not one.
        if matches!(t.get(2).map(|x| &x.tok), Some(Tok::Word(w)) if w == b"all") {
            return Kind::Other;
        }
        return name(2).map_or(Kind::Other, Kind::Role);
    }
    if is(0, "alter") && is(1, "tablespace") {
        return name(2).map_or(Kind::Other, Kind::Tablespace);
    }
    // COMMENT ON ROLE x …, SECURITY LABEL [FOR p] ON ROLE x …
    let on_at = if is(0, "comment") && is(1, "on") {
        Some(1)
    } else if is(0, "security") && is(1, "label") {
        if is(2, "for") {
            Some(4)
        } else {
            Some(2)
        }
    } else {
        None
    };
    if let Some(on) = on_at.filter(|&on| is(on, "on")) {
        if role_word(on + 1) {
            return name(on + 2).map_or(Kind::Other, Kind::Role);
        }
        if is(on + 1, "tablespace") {
            return name(on + 2).map_or(Kind::Other, Kind::Tablespace);
        }
        return Kind::Other;
    }
    if is(0, "grant") || is(0, "revoke") {
        return match t.iter().position(|x| x.is("on")) {
            None if is(0, "grant") => Kind::Membership,
            None => Kind::Other,
            Some(on) if is(on + 1, "tablespace") => {
                name(on + 2).map_or(Kind::Other, Kind::Tablespace)
            }
            Some(_) => Kind::Other,
        };
    }
    Kind::Other
}

/// Where the attribute list of `ALTER ROLE x WITH …` starts.
fn role_attributes(t: &[Token]) -> Option<usize> {
    (t.len() > 3 && t[0].is("alter") && t[3].is("with")).then_some(4)
}

fn login_and_password(attrs: &[Token]) -> (bool, bool) {
    let login = attrs.iter().any(|a| a.is("login"));
    let password = attrs
        .windows(2)
        .any(|w| w[0].is("password") && w[1].tok == Tok::Str);
    (login, password)
}

/// The role attributes that only some roles may set, with their `NO…` forms.
const GUARDED_ATTRIBUTES: &[(&str, &str, &str)] = &[
    ("superuser", "nosuperuser", "SUPERUSER"),
    ("replication", "noreplication", "REPLICATION"),
    ("bypassrls", "nobypassrls", "BYPASSRLS"),
    ("createdb", "nocreatedb", "CREATEDB"),
    ("createrole", "nocreaterole", "CREATEROLE"),
];

/// Leaves out of `ALTER ROLE … WITH` the attributes the restoring role may not set: a new role
/// has none of them, so only the ones it had (not their `NO…` forms) are lost, and returned.
/// `None` when no attribute is left (the statement is dropped).
fn drop_attributes(
    stmt: &[u8],
    attrs: &[Token],
    target: &Target,
) -> Option<(Vec<u8>, Vec<&'static str>)> {
    if target.superuser {
        return Some((stmt.to_vec(), Vec::new()));
    }
    let mut out = Vec::with_capacity(stmt.len());
    let mut dropped = Vec::new();
    let mut at = 0;
    let mut left = 0;
    for a in attrs {
        let guarded = GUARDED_ATTRIBUTES
            .iter()
            .find(|(yes, no, _)| a.is(yes) || a.is(no))
            .filter(|(_, _, name)| !target.may_set.contains(name));
        match guarded {
            Some((yes, _, name)) => {
                let mut from = a.start;
                while from > at && stmt[from - 1].is_ascii_whitespace() {
                    from -= 1;
                }
                out.extend_from_slice(&stmt[at..from]);
                at = a.end;
                if a.is(yes) {
                    dropped.push(*name);
                }
            }
            None if a.tok != Tok::Other(b';') => left += 1,
            None => {}
        }
    }
    out.extend_from_slice(&stmt[at..]);
    (left > 0).then_some((out, dropped))
}

/// A membership without its `GRANTED BY` clause when it names another role than the restoring
/// one; with the grantor's name.
fn drop_foreign_grantor(stmt: &[u8], t: &[Token], target: &Target) -> Option<(Vec<u8>, Vec<u8>)> {
    let at = t
        .windows(3)
        .position(|w| w[0].is("granted") && w[1].is("by") && w[2].name().is_some())?;
    let grantor = t[at + 2].name().expect("checked");
    if grantor == target.current_user {
        return None;
    }
    // From the end of the token before GRANTED (dropping the space) to the grantor's end.
    let from = if at > 0 { t[at - 1].end } else { t[at].start };
    let mut out = stmt[..from].to_vec();
    out.extend_from_slice(&stmt[t[at + 2].end..]);
    Some((out, grantor))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `pg_dumpall --globals-only` from PostgreSQL 18.1 (hashes shortened).
    const PG18: &str = r#"--
-- PostgreSQL database cluster dump
--

\restrict ILG9FP9d5tBUxZNKFcFvUlMW9lrTwWmadbfzXgpPPMqPRejeleVjaBi6ZR0b3js

SET default_transaction_read_only = off;

SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;

--
-- Roles
--

CREATE ROLE "Mixed Case";
ALTER ROLE "Mixed Case" WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB NOLOGIN NOREPLICATION NOBYPASSRLS;
CREATE ROLE app;
ALTER ROLE app WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB LOGIN NOREPLICATION NOBYPASSRLS PASSWORD 'SCRAM-SHA-256$4096:B1tA+Liw==$l5DY:TjRB';
CREATE ROLE postgres;
ALTER ROLE postgres WITH SUPERUSER INHERIT CREATEROLE CREATEDB LOGIN REPLICATION BYPASSRLS PASSWORD 'SCRAM-SHA-256$4096:KsgD==$o/HF:Rl6s';
CREATE ROLE readers;
ALTER ROLE readers WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB NOLOGIN NOREPLICATION NOBYPASSRLS;
CREATE ROLE "we""ird";
ALTER ROLE "we""ird" WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB LOGIN NOREPLICATION NOBYPASSRLS;
CREATE ROLE ops;
ALTER ROLE ops WITH SUPERUSER INHERIT NOCREATEROLE NOCREATEDB LOGIN REPLICATION NOBYPASSRLS PASSWORD 'md5a;b''c';
COMMENT ON ROLE ops IS 'on-call; "root"
second line';

--
-- User Configurations
--

--
-- User Config "app"
--

ALTER ROLE app SET statement_timeout TO '5s';
ALTER ROLE postgres SET search_path TO 'a;b';


--
-- Role memberships
--

GRANT readers TO "Mixed Case" WITH ADMIN OPTION, INHERIT TRUE GRANTED BY postgres;
GRANT readers TO app WITH INHERIT TRUE GRANTED BY postgres;


--
-- Role privileges on configuration parameters
--

GRANT SET ON PARAMETER work_mem TO app;


--
-- Tablespaces
--

CREATE TABLESPACE ts1 OWNER postgres LOCATION '/tmp/ts1';
CREATE TABLESPACE "Fast Disk" OWNER app LOCATION '/mnt/fast';
GRANT CREATE ON TABLESPACE "Fast Disk" TO readers;


\unrestrict ILG9FP9d5tBUxZNKFcFvUlMW9lrTwWmadbfzXgpPPMqPRejeleVjaBi6ZR0b3js

--
-- PostgreSQL database cluster dump complete
--

"#;

    /// `pg_dumpall --globals-only --no-role-passwords` from PostgreSQL 13.23.
    const PG13: &str = r#"--
-- PostgreSQL database cluster dump
--

\restrict 0suovBsX7dcJqIkn7wooY4fcoScInJJLUCVFvKcoqTN96hFJqTccJRFDc7WY7b3

SET default_transaction_read_only = off;

SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;

--
-- Roles
--

CREATE ROLE "Mixed Case";
ALTER ROLE "Mixed Case" WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB NOLOGIN NOREPLICATION NOBYPASSRLS;
CREATE ROLE app;
ALTER ROLE app WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB LOGIN NOREPLICATION NOBYPASSRLS;
COMMENT ON ROLE app IS 'the app';
CREATE ROLE plain;
ALTER ROLE plain WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB LOGIN NOREPLICATION NOBYPASSRLS;
CREATE ROLE postgres;
ALTER ROLE postgres WITH SUPERUSER INHERIT CREATEROLE CREATEDB LOGIN REPLICATION BYPASSRLS;
CREATE ROLE readers;
ALTER ROLE readers WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB NOLOGIN NOREPLICATION NOBYPASSRLS;
--
-- User Configurations
--

--
-- User Config "app"
--

ALTER ROLE app SET statement_timeout TO '5s';


--
-- Role memberships
--

GRANT readers TO "Mixed Case" WITH ADMIN OPTION GRANTED BY postgres;
GRANT readers TO app GRANTED BY postgres;




\unrestrict 0suovBsX7dcJqIkn7wooY4fcoScInJJLUCVFvKcoqTN96hFJqTccJRFDc7WY7b3

--
-- PostgreSQL database cluster dump complete
--

"#;

    fn target(roles: &[&str], tablespaces: &[&str]) -> Target {
        Target {
            current_user: b"postgres".to_vec(),
            superuser: true,
            may_set: Vec::new(),
            roles: roles.iter().map(|r| r.as_bytes().to_vec()).collect(),
            tablespaces: tablespaces.iter().map(|t| t.as_bytes().to_vec()).collect(),
        }
    }

    /// Both scripts, for what either holds.
    fn both(r: &Replay) -> String {
        let mut s = String::from_utf8(r.roles_script.clone()).unwrap();
        if let Some(t) = &r.tablespaces_script {
            s.push_str(std::str::from_utf8(t).unwrap());
        }
        s
    }

    fn statements(script: &[u8]) -> Vec<String> {
        pieces(script)
            .into_iter()
            .filter_map(|p| match p {
                Piece::Statement(s) => Some(String::from_utf8(s.to_vec()).unwrap()),
                Piece::Line(_) => None,
            })
            .collect()
    }

    #[test]
    fn pieces_rebuild_the_script_and_split_statements_outside_quotes() {
        let joined: Vec<u8> = pieces(PG18.as_bytes())
            .iter()
            .flat_map(|p| match p {
                Piece::Line(l) | Piece::Statement(l) => l.to_vec(),
            })
            .collect();
        assert_eq!(joined, PG18.as_bytes());
        let st = statements(PG18.as_bytes());
        assert!(st.contains(&"ALTER ROLE ops WITH SUPERUSER INHERIT NOCREATEROLE NOCREATEDB LOGIN REPLICATION NOBYPASSRLS PASSWORD 'md5a;b''c';".to_string()));
        assert!(
            st.contains(&"COMMENT ON ROLE ops IS 'on-call; \"root\"\nsecond line';".to_string())
        );
        assert!(st.contains(&"ALTER ROLE postgres SET search_path TO 'a;b';".to_string()));
        // Meta-commands and comments are lines, never statements.
        assert!(st
            .iter()
            .all(|s| !s.starts_with('\\') && !s.starts_with("--")));
        // Dollar quotes, E strings, comments.
        let st =
            statements(b"DO $x$ BEGIN; END $x$;\nSELECT E'a\\';b';\nSELECT 1 /* ; */ -- ;\n;\n");
        assert_eq!(
            st,
            [
                "DO $x$ BEGIN; END $x$;",
                "SELECT E'a\\';b';",
                "SELECT 1 /* ; */ -- ;\n;"
            ]
        );
    }

    #[test]
    fn statements_are_classified_with_quoted_names() {
        let kind = |s: &str| classify(&tokens(s.as_bytes()));
        assert_eq!(
            kind("CREATE ROLE \"we\"\"ird\";"),
            Kind::CreateRole(b"we\"ird".to_vec())
        );
        assert_eq!(kind("CREATE ROLE App;"), Kind::CreateRole(b"app".to_vec()));
        assert_eq!(
            kind("ALTER ROLE \"Mixed Case\" IN DATABASE shop SET x TO 1;"),
            Kind::Role(b"Mixed Case".to_vec())
        );
        assert_eq!(
            kind("COMMENT ON ROLE \"r\" IS 'x';"),
            Kind::Role(b"r".to_vec())
        );
        assert_eq!(
            kind("SECURITY LABEL FOR selinux ON ROLE r IS 'x';"),
            Kind::Role(b"r".to_vec())
        );
        assert_eq!(
            kind("SECURITY LABEL ON TABLESPACE t IS 'x';"),
            Kind::Tablespace(b"t".to_vec())
        );
        assert_eq!(kind("GRANT readers TO app;"), Kind::Membership);
        assert_eq!(kind("GRANT SET ON PARAMETER work_mem TO app;"), Kind::Other);
        assert_eq!(
            kind("GRANT ALL ON TABLESPACE \"T\" TO app;"),
            Kind::Tablespace(b"T".to_vec())
        );
        assert_eq!(kind("ALTER ROLE ALL SET x TO 1;"), Kind::Other);
        assert_eq!(
            kind("ALTER ROLE \"all\" SET x TO 1;"),
            Kind::Role(b"all".to_vec())
        );
        assert_eq!(kind("SET client_encoding = 'UTF8';"), Kind::Set);
    }

    #[test]
    fn existing_roles_are_kept_as_they_are() {
        let r = replay(PG18.as_bytes(), &target(&["postgres", "app"], &[]));
        let script = both(&r);
        assert_eq!(r.kept, ["app", "postgres"]);
        assert_eq!(r.created, ["Mixed Case", "readers", "we\"ird", "ops"]);
        // Nothing about an existing role is replayed: not its password, attributes or settings.
        assert!(!script.contains("CREATE ROLE app;"), "{script}");
        assert!(!script.contains("ALTER ROLE app "), "{script}");
        assert!(!script.contains("ALTER ROLE postgres"), "{script}");
        assert!(!script.contains("KsgD"), "{script}");
        // The others are, memberships included (even into kept roles), and the meta-commands.
        for kept in [
            "CREATE ROLE \"Mixed Case\";",
            "CREATE ROLE \"we\"\"ird\";",
            "ALTER ROLE ops WITH SUPERUSER",
            "COMMENT ON ROLE ops IS 'on-call; \"root\"\nsecond line';",
            "GRANT readers TO app WITH INHERIT TRUE GRANTED BY postgres;",
            "GRANT readers TO \"Mixed Case\" WITH ADMIN OPTION, INHERIT TRUE GRANTED BY postgres;",
            "GRANT SET ON PARAMETER work_mem TO app;",
            "\\restrict ILG9",
            "\\unrestrict ILG9",
            "CREATE TABLESPACE ts1 OWNER postgres LOCATION '/tmp/ts1';",
        ] {
            assert!(script.contains(kept), "{kept} missing:\n{script}");
        }
        assert_eq!(r.tablespaces_created, ["ts1", "Fast Disk"]);
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);
        assert_eq!(r.without_password, ["we\"ird"]);
    }

    #[test]
    fn roles_run_in_one_transaction_after_the_sets_and_tablespaces_after_them() {
        let r = replay(PG18.as_bytes(), &target(&["postgres"], &[]));
        let roles = String::from_utf8(r.roles_script.clone()).unwrap();
        let at = |s: &str| roles.find(s).unwrap_or_else(|| panic!("{s}: {roles}"));
        assert!(at("SET default_transaction_read_only = off;") < at("BEGIN;"));
        assert!(at("SET standard_conforming_strings = on;") < at("BEGIN;"));
        assert!(at("BEGIN;") < at("CREATE ROLE \"Mixed Case\";"));
        assert!(at("GRANT SET ON PARAMETER") < at("COMMIT;"));
        assert_eq!(roles.matches("COMMIT;").count(), 1);
        assert!(at("\\restrict ILG9") < at("BEGIN;"));
        assert!(at("COMMIT;") < at("\\unrestrict ILG9"));
        assert_eq!(roles.matches("BEGIN;").count(), 1);
        assert!(!roles.contains("TABLESPACE"), "{roles}");

        // The tablespaces: the same frame (SETs, meta-commands), no transaction, no roles.
        let ts = String::from_utf8(r.tablespaces_script.unwrap()).unwrap();
        let at = |s: &str| ts.find(s).unwrap_or_else(|| panic!("{s}: {ts}"));
        assert!(at("\\restrict ILG9") < at("SET client_encoding = 'UTF8';"));
        assert!(at("SET client_encoding = 'UTF8';") < at("CREATE TABLESPACE ts1"));
        assert!(
            at("CREATE TABLESPACE \"Fast Disk\"")
                < at("GRANT CREATE ON TABLESPACE \"Fast Disk\" TO readers;")
        );
        assert!(at("GRANT CREATE ON TABLESPACE") < at("\\unrestrict ILG9"));
        assert!(!ts.contains("BEGIN") && !ts.contains("ROLE"), "{ts}");

        // Without tablespaces there is no second script.
        let r = replay(PG13.as_bytes(), &target(&["postgres"], &[]));
        assert!(r.tablespaces_script.is_none());
        let roles = String::from_utf8(r.roles_script).unwrap();
        assert!(roles.find("BEGIN;").unwrap() < roles.find("CREATE ROLE").unwrap());
    }

    #[test]
    fn existing_tablespaces_are_kept_with_their_grants() {
        let r = replay(PG18.as_bytes(), &target(&["postgres"], &["Fast Disk"]));
        let script = both(&r);
        assert_eq!(r.tablespaces_kept, ["Fast Disk"]);
        assert_eq!(r.tablespaces_created, ["ts1"]);
        assert!(!script.contains("/mnt/fast"), "{script}");
        assert!(!script.contains("ON TABLESPACE \"Fast Disk\""), "{script}");
        assert!(script.contains("LOCATION '/tmp/ts1'"), "{script}");
    }

    #[test]
    fn the_pg13_format_without_passwords() {
        let r = replay(PG13.as_bytes(), &target(&["postgres", "Mixed Case"], &[]));
        let script = both(&r);
        assert_eq!(r.kept, ["Mixed Case", "postgres"]);
        assert_eq!(r.created, ["app", "plain", "readers"]);
        assert!(!script.contains("ALTER ROLE \"Mixed Case\""), "{script}");
        assert!(
            script.contains("COMMENT ON ROLE app IS 'the app';"),
            "{script}"
        );
        assert!(script
            .contains("GRANT readers TO \"Mixed Case\" WITH ADMIN OPTION GRANTED BY postgres;"));
        assert!(script.contains("GRANT readers TO app GRANTED BY postgres;"));
        assert_eq!(r.without_password, ["app", "plain"]);
    }

    #[test]
    fn the_connecting_role_is_always_kept() {
        // Even when the role list missed it: its password is never replaced.
        let mut t = target(&[], &[]);
        t.current_user = b"Mixed Case".to_vec();
        let r = replay(PG13.as_bytes(), &t);
        assert!(r.kept.contains(&"Mixed Case".to_string()));
        let script = both(&r);
        assert!(!script.contains("CREATE ROLE \"Mixed Case\""), "{script}");
    }

    #[test]
    fn a_non_superuser_creates_roles_without_what_it_may_not_give() {
        let t = Target {
            current_user: b"admin".to_vec(),
            superuser: false,
            may_set: vec!["BYPASSRLS", "CREATEROLE", "CREATEDB"],
            roles: [b"admin".to_vec()].into_iter().collect(),
            tablespaces: HashSet::new(),
        };
        let r = replay(PG18.as_bytes(), &t);
        let script = both(&r);
        assert!(script.contains(
            "ALTER ROLE postgres WITH INHERIT CREATEROLE CREATEDB LOGIN BYPASSRLS PASSWORD 'SCRAM-SHA-256$4096:KsgD==$o/HF:Rl6s';"
        ), "{script}");
        assert!(
            script.contains(
                "ALTER ROLE readers WITH INHERIT NOCREATEROLE NOCREATEDB NOLOGIN NOBYPASSRLS;"
            ),
            "{script}"
        );
        assert!(
            script.contains("GRANT readers TO app WITH INHERIT TRUE;"),
            "{script}"
        );
        assert!(script.contains("GRANT readers TO \"Mixed Case\" WITH ADMIN OPTION, INHERIT TRUE;"));
        assert!(!script.contains("GRANTED BY"), "{script}");
        assert_eq!(r.warnings.len(), 3, "{:?}", r.warnings);
        assert!(r.warnings[0]
            .starts_with("role \"postgres\" is created without SUPERUSER, REPLICATION"));
        assert!(r.warnings[1].starts_with("role \"ops\" is created without SUPERUSER, REPLICATION"));
        assert!(
            r.warnings[2].contains("granted by \"postgres\""),
            "{:?}",
            r.warnings
        );

        // A grantor that is the restoring role stays.
        let mut t2 = t.clone();
        t2.current_user = b"postgres".to_vec();
        let r = replay(PG13.as_bytes(), &t2);
        let script = both(&r);
        assert!(script.contains("GRANT readers TO app GRANTED BY postgres;"));

        // Before 16 a CREATEROLE role sets no attribute but CREATEDB and CREATEROLE; a
        // statement left without attributes is dropped.
        let t3 = Target {
            may_set: vec!["CREATEROLE", "CREATEDB"],
            ..t.clone()
        };
        let r = replay(
            b"CREATE ROLE a;\nALTER ROLE a WITH NOSUPERUSER NOREPLICATION;\nALTER ROLE a WITH REPLICATION LOGIN;\n",
            &t3,
        );
        assert_eq!(
            String::from_utf8(r.roles_script).unwrap(),
            "BEGIN;\nCREATE ROLE a;\n\nALTER ROLE a WITH LOGIN;\n\nCOMMIT;\n"
        );
        assert_eq!(r.warnings.len(), 1, "{:?}", r.warnings);
    }

    #[test]
    fn meta_commands_other_than_restrict_are_refused() {
        let r = replay(PG18.as_bytes(), &target(&["postgres"], &[]));
        assert!(r.refused.is_empty(), "{:?}", r.refused);
        let r = replay(
            b"\\restrict abc\nCREATE ROLE a;\n\\! touch /tmp/x\nCOMMENT ON ROLE a IS 'ok \\! fine';\nCREATE ROLE b \\gexec\n;\n\\unrestrict abc\n",
            &target(&["postgres"], &[]),
        );
        assert_eq!(r.refused, ["\\! touch /tmp/x", "CREATE ROLE b \\gexec\n;"]);
        assert!(!is_restrict_command(b"\\restrict"));
        assert!(is_restrict_command(b"\\unrestrict KEY\n"));
    }

    #[test]
    fn passwords_are_redacted_from_error_text() {
        let text = "psql:<stdin>:20: ERROR:  syntax error\nLINE 1: ALTER ROLE x WITH LOGIN PASSWORD 'SCRAM-SHA-256$4096:abc''d' VALID\n";
        let r = redact_passwords(text);
        assert!(!r.contains("SCRAM"), "{r}");
        assert!(r.contains("PASSWORD '***' VALID"), "{r}");
        assert_eq!(
            redact_passwords("password authentication failed"),
            "password authentication failed"
        );
        assert_eq!(redact_passwords("PASSWORD 'cut off"), "PASSWORD '***");
        assert_eq!(redact_passwords("password E'a\\'b' x"), "password E'***' x");
    }
}
