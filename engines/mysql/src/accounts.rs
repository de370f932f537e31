//! A whole-server backup's globals: the server's accounts (users, MariaDB roles) and their
//! grants, as a script of SQL statements.
//!
//! The script is made from the server's own answers: `SHOW CREATE USER` (password hashes
//! included; MySQL prints them as hex with `print_identified_with_as_hex`) and `SHOW GRANTS FOR`
//! for every account that is not the server's own. Its sections come in this order, each headed
//! by a comment line naming its account so that a restore can tell them apart:
//!
//! 1. `-- create user 'u'@'h'` / `-- create role 'r'`: `CREATE USER IF NOT EXISTS …` or
//!    `CREATE ROLE IF NOT EXISTS …`, every account before any grant (grants of roles name other
//!    accounts);
//! 2. `-- grants 'u'@'h'`: the account's `GRANT` (and, with MySQL's partial revokes, `REVOKE`)
//!    statements, without the account attributes MariaDB repeats in them (password, TLS,
//!    limits: those are in `CREATE USER`);
//! 3. `-- default roles 'u'@'h'`: the default roles, once the roles are granted.
//!
//! The script holds password hashes: it only ever goes to the stored object and to a client's
//! stdin, never to a log, an error message or argv.

use crate::fidelity::rows;
use crate::flavor::Flavor;

/// Accounts of the server itself, never backed up or restored (by user name, any host).
const SYSTEM_USERS: &[&str] = &[
    "root",
    "mysql.sys",
    "mysql.session",
    "mysql.infoschema",
    "mariadb.sys",
    "debian-sys-maint",
    // Amazon RDS's administrator account.
    "rdsadmin",
];

/// An account as `mysql.user` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Account {
    pub user: String,
    /// `None` for a MariaDB role (host `''` in `mysql.user`) and MariaDB's `PUBLIC`.
    pub host: Option<String>,
}

impl Account {
    pub fn user(user: &str, host: &str) -> Account {
        Account {
            user: user.into(),
            host: Some(host.into()),
        }
    }

    pub fn role(name: &str) -> Account {
        Account {
            user: name.into(),
            host: None,
        }
    }

    /// MariaDB's `PUBLIC`: every account's grants; it exists without being created.
    pub fn is_public(&self) -> bool {
        self.host.is_none() && self.user == "PUBLIC"
    }

    /// The account in SQL: `'user'@'host'`, `'role'`, `PUBLIC`. Also how it is named to people.
    pub fn sql(&self) -> String {
        match &self.host {
            Some(host) => format!("{}@{}", quote(&self.user), quote(host)),
            None if self.is_public() => "PUBLIC".into(),
            None => quote(&self.user),
        }
    }

    /// Whether `mysql.user`'s row `(user, host)` is this account.
    fn is_row(&self, user: &str, host: &str) -> bool {
        self.user == user && self.host.as_deref().unwrap_or("") == host
    }
}

/// A SQL string literal safe on one line (the sessions run with an empty sql_mode, so
/// backslash escapes apply).
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("''"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\0' => out.push_str("\\0"),
            '\x1a' => out.push_str("\\Z"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// Every account, roles marked (MySQL keeps no such mark: a MySQL role is a locked account and
/// is recreated as one).
pub fn accounts_query(flavor: Flavor) -> &'static str {
    match flavor {
        Flavor::Mariadb => "SELECT user, host, is_role FROM mysql.user ORDER BY user, host;\n",
        Flavor::Mysql => "SELECT user, host, 'N' FROM mysql.user ORDER BY user, host;\n",
    }
}

/// An account to back up, and whether it is a (MariaDB) role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub account: Account,
    pub role: bool,
}

/// The accounts of [`accounts_query`]'s answer, the server's own and anonymous ones left out.
pub fn parse_accounts(out: &str) -> Vec<Listed> {
    rows(out)
        .filter(|r| r.len() == 3)
        .filter(|r| !r[0].is_empty() && !SYSTEM_USERS.contains(&r[0].as_str()))
        .map(|r| {
            let role = r[2].eq_ignore_ascii_case("y");
            Listed {
                account: if role {
                    Account::role(&r[0])
                } else {
                    Account::user(&r[0], &r[1])
                },
                role,
            }
        })
        .collect()
}

/// The session settings of both the reading and the replaying session: backslash escapes on,
/// no ANSI quotes, and (MySQL) hashes printed as hex so that they survive as text.
pub fn session(flavor: Flavor, reading: bool) -> String {
    let mut s = String::from("SET SESSION sql_mode = '';\n");
    if reading && flavor == Flavor::Mysql {
        s.push_str("SET SESSION print_identified_with_as_hex = ON;\n");
    }
    s
}

/// A row the reading script selects before each account's answers.
const MARKER: &str = "#backup-runner#";

fn marker(i: usize) -> String {
    format!("{MARKER}{i}")
}

/// The queries whose answer [`parse_definitions`] reads: per account a marker row, its
/// `SHOW CREATE USER` (not for roles) and its `SHOW GRANTS`.
pub fn show_script(flavor: Flavor, accounts: &[Listed]) -> String {
    let mut s = session(flavor, true);
    for (i, a) in accounts.iter().enumerate() {
        s.push_str(&format!("SELECT {};\n", quote(&marker(i))));
        if !a.role {
            s.push_str(&format!("SHOW CREATE USER {};\n", a.account.sql()));
        }
        s.push_str(&format!("SHOW GRANTS FOR {};\n", a.account.sql()));
    }
    s
}

/// What the script holds for one account.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Definition {
    /// `CREATE USER IF NOT EXISTS …` / `CREATE ROLE IF NOT EXISTS …`; `None` for `PUBLIC`.
    pub create: Option<String>,
    pub grants: Vec<String>,
    pub default_roles: Vec<String>,
}

/// Reads [`show_script`]'s answer: one definition per account, in the same order.
pub fn parse_definitions(
    flavor: Flavor,
    accounts: &[Listed],
    out: &str,
) -> Result<Vec<Definition>, String> {
    let mut answers: Vec<Vec<String>> = vec![Vec::new(); accounts.len()];
    let mut current: Option<usize> = None;
    for row in rows(out) {
        let line = row.join("\t");
        let at = line
            .strip_prefix(MARKER)
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|i| *i < accounts.len());
        if at.is_some() {
            current = at;
            continue;
        }
        match current {
            Some(i) => answers[i].push(line),
            None => return Err("an answer came before the first account's".into()),
        }
    }
    accounts
        .iter()
        .zip(answers)
        .map(|(a, lines)| definition(flavor, a, lines))
        .collect()
}

/// One account's definition from its `SHOW CREATE USER` (first, for a user) and `SHOW GRANTS`
/// lines.
pub fn definition(flavor: Flavor, a: &Listed, lines: Vec<String>) -> Result<Definition, String> {
    let name = a.account.sql();
    let mut lines = lines.into_iter();
    let mut def = Definition::default();
    if a.account.is_public() {
    } else if a.role {
        def.create = Some(format!(
            "CREATE ROLE IF NOT EXISTS {}",
            ident(&a.account.user)
        ));
    } else {
        let create = lines
            .next()
            .ok_or_else(|| format!("SHOW CREATE USER {name} printed nothing"))?;
        let (create, default_roles) = split_default_role(&create);
        def.create = Some(
            create_if_not_exists(&create)
                .ok_or_else(|| format!("SHOW CREATE USER {name} printed no CREATE USER"))?,
        );
        if let Some(roles) = default_roles {
            def.default_roles
                .push(format!("SET DEFAULT ROLE {roles} TO {name}"));
        }
    }
    for line in lines {
        let w = words(&line);
        let first = w.first().map(|w| w.text.to_ascii_uppercase());
        match first.as_deref() {
            // MariaDB lists the default role among the grants: `SET DEFAULT ROLE r FOR u@h`.
            Some("SET") if flavor == Flavor::Mariadb => {
                if grantee(&line, "FOR").is_some_and(|g| g == a.account) {
                    def.default_roles.push(line);
                }
            }
            Some("GRANT") | Some("REVOKE") => {
                // MariaDB also prints the grants of the roles granted to a role.
                let to = if first.as_deref() == Some("GRANT") {
                    "TO"
                } else {
                    "FROM"
                };
                match grantee(&line, to) {
                    Some(g) if g == a.account => {}
                    Some(_) => continue,
                    None => return Err(format!("cannot read a grant of {name}")),
                }
                if let Some(g) = grant_only(&line) {
                    def.grants.push(g);
                }
            }
            _ => return Err(format!("unexpected line in the grants of {name}")),
        }
    }
    Ok(def)
}

/// A quoted identifier.
fn ident(s: &str) -> String {
    format!("`{}`", s.replace('`', "``"))
}

/// A top-level word of a statement: a run of characters between blanks, quoted parts (with
/// their blanks) included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Word<'a> {
    pub text: &'a str,
    pub start: usize,
    pub end: usize,
}

/// Where the quoted part opening at `open` (`'`, `"` or `` ` ``) ends (the byte after it).
fn quoted_end(s: &[u8], open: usize) -> usize {
    let q = s[open];
    let mut i = open + 1;
    while i < s.len() {
        let c = s[i];
        if c == b'\\' && q != b'`' {
            i += 2;
            continue;
        }
        if c == q {
            if s.get(i + 1) == Some(&q) {
                i += 2;
                continue;
            }
            return i + 1;
        }
        i += 1;
    }
    s.len()
}

pub fn words(s: &str) -> Vec<Word<'_>> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !b[i].is_ascii_whitespace() {
            if matches!(b[i], b'\'' | b'"' | b'`') {
                i = quoted_end(b, i);
            } else {
                i += 1;
            }
        }
        out.push(Word {
            text: &s[start..i],
            start,
            end: i,
        });
    }
    out
}

fn is(word: &Word<'_>, keyword: &str) -> bool {
    word.text.eq_ignore_ascii_case(keyword)
}

/// The value of one quoted part (or a bare word): quotes removed, escapes undone.
fn unquote(part: &str) -> String {
    let Some(q) = part
        .chars()
        .next()
        .filter(|c| matches!(c, '\'' | '"' | '`'))
    else {
        return part.to_string();
    };
    let inner = &part[1..part.len().saturating_sub(1).max(1)];
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' && q != '`' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some('r') => out.push('\r'),
                Some('t') => out.push('\t'),
                Some('0') => out.push('\0'),
                Some('Z') => out.push('\x1a'),
                Some('b') => out.push('\x08'),
                Some(other) => out.push(other),
                None => out.push('\\'),
            }
        } else if c == q && chars.peek() == Some(&q) {
            chars.next();
            out.push(q);
        } else {
            out.push(c);
        }
    }
    out
}

/// An account as the server prints it (`` `u`@`h` ``, `'u'@'h'`, `` `role` ``, `PUBLIC`).
pub fn parse_account(text: &str) -> Option<Account> {
    let b = text.as_bytes();
    let part_end = |from: usize| -> usize {
        if from < b.len() && matches!(b[from], b'\'' | b'"' | b'`') {
            quoted_end(b, from)
        } else {
            from + text[from..].find('@').unwrap_or(text.len() - from)
        }
    };
    let user_end = part_end(0);
    if user_end == 0 {
        return None;
    }
    let user = unquote(&text[..user_end]);
    if user_end == text.len() {
        return Some(Account::role(&user));
    }
    if b[user_end] != b'@' {
        return None;
    }
    let host_end = part_end(user_end + 1);
    if host_end != text.len() {
        return None;
    }
    Some(Account::user(&user, &unquote(&text[user_end + 1..])))
}

/// The account after the first top-level `keyword` (`TO` in a GRANT, `FROM` in a REVOKE, `FOR`
/// in MariaDB's SET DEFAULT ROLE).
fn grantee(statement: &str, keyword: &str) -> Option<Account> {
    let w = words(statement);
    let at = w.iter().position(|x| is(x, keyword))?;
    parse_account(w.get(at + 1)?.text)
}

/// A grant as a statement that grants and nothing else: MariaDB prints the account's
/// password, TLS requirement and limits after it (`IDENTIFIED BY PASSWORD …`, `REQUIRE …`,
/// `WITH MAX_… n`), which would alter an existing account; only `WITH GRANT OPTION` and
/// `WITH ADMIN OPTION` are kept. `None` for a grant of nothing (`USAGE ON *.*`).
pub fn grant_only(statement: &str) -> Option<String> {
    let w = words(statement);
    let revoke = w.first().is_some_and(|x| is(x, "REVOKE"));
    let to = w
        .iter()
        .position(|x| is(x, if revoke { "FROM" } else { "TO" }))?;
    let account = w.get(to + 1)?;
    let mut out = statement[..account.end].to_string();
    let tail = &w[to + 2..];
    let has = |a: &str, b: &str| tail.windows(2).any(|p| is(&p[0], a) && is(&p[1], b));
    let grant_option = has("GRANT", "OPTION");
    if grant_option {
        out.push_str(" WITH GRANT OPTION");
    }
    if has("ADMIN", "OPTION") {
        out.push_str(" WITH ADMIN OPTION");
    }
    let usage_only = w.len() > 3 && is(&w[1], "USAGE") && is(&w[2], "ON") && w[3].text == "*.*";
    (!(usage_only && !grant_option && !revoke)).then_some(out)
}

/// What a GRANT is on, when it is a database's object: the database, the table or routine
/// (`None` for `db.*`) and whether it is a routine.
fn grant_object(statement: &str) -> Option<(String, Option<String>, bool)> {
    let w = words(statement);
    if !w.first().is_some_and(|x| is(x, "GRANT")) {
        return None;
    }
    let on = w.iter().position(|x| is(x, "ON"))?;
    let mut at = on + 1;
    let mut routine = false;
    while let Some(x) = w.get(at) {
        if ["PROCEDURE", "FUNCTION", "PACKAGE", "BODY", "TABLE"]
            .iter()
            .any(|k| is(x, k))
        {
            routine |= !is(x, "TABLE");
            at += 1;
        } else {
            break;
        }
    }
    let object = w.get(at)?.text;
    let b = object.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\'' | b'"' | b'`' => i = quoted_end(b, i),
            b'.' => {
                let name = &object[i + 1..];
                let name = (name != "*").then(|| unquote(name));
                return Some((unquote(&object[..i]), name, routine));
            }
            _ => i += 1,
        }
    }
    None
}

/// The database of a grant on a table, its columns or a routine (`ON `db`.`t``,
/// `ON PROCEDURE `db`.`p``): such a grant needs its object to exist, so it is replayed once the
/// database is restored. `None` for global, database-level, proxy and role grants, which need
/// nothing to exist but their accounts.
pub fn object_database(statement: &str) -> Option<String> {
    match grant_object(statement)? {
        (db, Some(_), _) | (db, None, true) => Some(db),
        _ => None,
    }
}

/// Grants the server keeps on tables or columns that no longer exist (a DROP TABLE or DROP
/// COLUMN leaves them): SHOW GRANTS prints them, and a restore would refuse them.
pub const ORPHANS_QUERY: &str =
    "SELECT p.user, p.host, p.db, p.table_name FROM mysql.tables_priv p \
  WHERE NOT EXISTS (SELECT 1 FROM information_schema.tables t \
    WHERE t.table_schema = p.db AND t.table_name = p.table_name) \
  UNION SELECT p.user, p.host, p.db, p.table_name FROM mysql.columns_priv p \
  WHERE NOT EXISTS (SELECT 1 FROM information_schema.columns c \
    WHERE c.table_schema = p.db AND c.table_name = p.table_name AND c.column_name = p.column_name) \
  ORDER BY 1, 2, 3, 4;\n";

/// Leaves out the grants on the tables [`ORPHANS_QUERY`] found, and names them.
pub fn drop_orphans(accounts: &[Listed], defs: &mut [Definition], orphans: &str) -> Vec<String> {
    let orphans: Vec<Vec<String>> = rows(orphans).filter(|r| r.len() == 4).collect();
    let mut dropped = Vec::new();
    for (a, d) in accounts.iter().zip(defs.iter_mut()) {
        d.grants.retain(|g| {
            let Some((db, Some(table), false)) = grant_object(g) else {
                return true;
            };
            let orphan = orphans
                .iter()
                .any(|o| a.account.is_row(&o[0], &o[1]) && o[2] == db && o[3] == table);
            if orphan {
                dropped.push(format!(
                    "{} on {}.{}",
                    a.account.sql(),
                    ident(&db),
                    ident(&table)
                ));
            }
            !orphan
        });
    }
    dropped
}

/// MySQL's SHOW CREATE USER names the default roles (`DEFAULT ROLE `r`@`%`,`s`@`%``), which
/// must be granted first: the statement without them, and the list.
pub fn split_default_role(statement: &str) -> (String, Option<String>) {
    let w = words(statement);
    let Some(at) = w
        .windows(2)
        .position(|p| is(&p[0], "DEFAULT") && is(&p[1], "ROLE"))
    else {
        return (statement.to_string(), None);
    };
    let roles: Vec<&Word<'_>> = w[at + 2..]
        .iter()
        .take_while(|x| x.text.starts_with(['`', '\'', '"', ',']))
        .collect();
    let Some(last) = roles.last() else {
        return (statement.to_string(), None);
    };
    let list = statement[roles[0].start..last.end].to_string();
    let rest = format!(
        "{} {}",
        statement[..w[at].start].trim_end(),
        statement[last.end..].trim_start()
    );
    (rest.trim_end().to_string(), Some(list))
}

/// `CREATE USER …` as `CREATE USER IF NOT EXISTS …` (an account made meanwhile is then left
/// alone).
fn create_if_not_exists(statement: &str) -> Option<String> {
    let w = words(statement);
    if w.len() < 3 || !is(&w[0], "CREATE") || !is(&w[1], "USER") {
        return None;
    }
    if is(&w[2], "IF") {
        return Some(statement.to_string());
    }
    Some(format!(
        "{} IF NOT EXISTS {}",
        &statement[..w[1].end],
        &statement[w[2].start..]
    ))
}

/// The globals script.
pub fn script(header: &str, accounts: &[Listed], definitions: &[Definition]) -> String {
    let mut s = String::new();
    for line in header.lines() {
        s.push_str(&format!("-- {line}\n"));
    }
    s.push_str("SET SESSION sql_mode = '';\n");
    let both = || accounts.iter().zip(definitions);
    // Roles first: nothing depends on the order, but it reads better.
    let mut creates: Vec<_> = both().filter(|(_, d)| d.create.is_some()).collect();
    creates.sort_by_key(|(a, _)| !a.role);
    for (a, d) in creates {
        let kind = if a.role { "role" } else { "user" };
        s.push_str(&format!("-- create {kind} {}\n", a.account.sql()));
        s.push_str(d.create.as_deref().unwrap_or_default());
        s.push_str(";\n");
    }
    for (section, pick) in [
        (
            "grants",
            (|d: &Definition| &d.grants) as fn(&Definition) -> &Vec<String>,
        ),
        ("default roles", |d: &Definition| &d.default_roles),
    ] {
        for (a, d) in both() {
            if pick(d).is_empty() {
                continue;
            }
            s.push_str(&format!("-- {section} {}\n", a.account.sql()));
            for stmt in pick(d) {
                s.push_str(stmt);
                s.push_str(";\n");
            }
        }
    }
    s
}

/// What a section of the script does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    CreateUser,
    CreateRole,
    Grants,
    DefaultRoles,
}

impl Section {
    fn describe(self) -> &'static str {
        match self {
            Section::CreateUser => "CREATE USER",
            Section::CreateRole => "CREATE ROLE",
            Section::Grants => "grants",
            Section::DefaultRoles => "default roles",
        }
    }
}

/// A statement of the script and the account it is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    pub section: Section,
    pub account: Account,
    pub sql: String,
}

fn parse_marker(comment: &str) -> Option<(Section, Account)> {
    let rest = comment.strip_prefix("--")?.trim();
    let (section, account) = [
        ("create user ", Section::CreateUser),
        ("create role ", Section::CreateRole),
        ("grants ", Section::Grants),
        ("default roles ", Section::DefaultRoles),
    ]
    .into_iter()
    .find_map(|(p, s)| rest.strip_prefix(p).map(|a| (s, a)))?;
    Some((section, parse_account(account.trim())?))
}

/// The script's statements with their accounts. Statements before the first section (the
/// session settings) are left out: the replay sets its own.
pub fn parse_script(text: &str) -> Result<Vec<Statement>, String> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut current: Option<(Section, Account)> = None;
    let mut start: Option<usize> = None;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\'' | b'"' | b'`' => {
                start.get_or_insert(i);
                i = quoted_end(b, i);
            }
            b'-' if start.is_none() && b.get(i + 1) == Some(&b'-') => {
                let end = text[i..].find('\n').map_or(b.len(), |n| i + n);
                let comment = &text[i..end];
                if let Some(m) = parse_marker(comment) {
                    current = Some(m);
                } else if comment.starts_with("-- create")
                    || comment.starts_with("-- grants")
                    || comment.starts_with("-- default roles")
                {
                    return Err("a section heading names no account it can read".into());
                }
                i = end;
            }
            b';' => {
                let from = start.take().unwrap_or(i);
                let sql = text[from..i].trim();
                if let (Some((section, account)), false) = (&current, sql.is_empty()) {
                    out.push(Statement {
                        section: *section,
                        account: account.clone(),
                        sql: sql.to_string(),
                    });
                }
                i += 1;
            }
            c if c.is_ascii_whitespace() => i += 1,
            _ => {
                start.get_or_insert(i);
                i += 1;
            }
        }
    }
    if start.is_some_and(|s| !text[s..].trim().is_empty()) {
        return Err("the script ends inside a statement (no closing ';')".into());
    }
    Ok(out)
}

/// What a restore runs, decided against the target's accounts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Replay {
    /// The statements to run, in order.
    pub statements: Vec<Statement>,
    /// Accounts created by the replay.
    pub created: Vec<Account>,
    /// Accounts the target already has, left as they are (their grants are added).
    pub kept: Vec<Account>,
    /// The restoring account, when the backup has it: left entirely alone.
    pub myself: Option<Account>,
}

/// The statements to replay on a target that has `existing` (`mysql.user`'s user and host) and
/// is restored into by `me`: existing accounts are not created again and keep their
/// settings (default roles) and privileges (no REVOKE); they only gain the backup's grants.
/// The restoring account itself is never touched.
pub fn replay(statements: Vec<Statement>, existing: &[(String, String)], me: &Account) -> Replay {
    let exists = |a: &Account| existing.iter().any(|(u, h)| a.is_row(u, h));
    let mut r = Replay::default();
    for s in statements {
        if s.account == *me {
            if r.myself.is_none() {
                r.myself = Some(me.clone());
            }
            continue;
        }
        let kept = exists(&s.account);
        match s.section {
            Section::CreateUser | Section::CreateRole => {
                if kept {
                    r.kept.push(s.account.clone());
                    continue;
                }
                r.created.push(s.account.clone());
            }
            // A REVOKE (MySQL's partial revokes) would take from an existing account.
            Section::Grants if kept && !words(&s.sql).first().is_some_and(|w| is(w, "GRANT")) => {
                continue
            }
            Section::DefaultRoles if kept => continue,
            _ => {}
        }
        r.statements.push(s);
    }
    r
}

/// The replay as SQL for the client, and for each statement its first and last line.
pub fn replay_sql(flavor: Flavor, statements: &[Statement]) -> (String, Vec<(usize, usize)>) {
    let mut sql = session(flavor, false);
    let mut line = sql.lines().count() + 1;
    let mut lines = Vec::with_capacity(statements.len());
    for s in statements {
        let n = s.sql.matches('\n').count();
        lines.push((line, line + n));
        line += n + 1;
        sql.push_str(&s.sql);
        sql.push_str(";\n");
    }
    (sql, lines)
}

/// A client's failure of the replay as a message that holds no statement text (it may hold a
/// password hash): only its `ERROR …` lines, with the statement the server quotes (`near '…'`)
/// and any literal of the script withheld; and the statement it stopped at, from the line.
pub fn replay_failure(
    stderr: &str,
    statements: &[Statement],
    lines: &[(usize, usize)],
) -> (String, Option<usize>) {
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("ERROR")).collect();
    let mut message = if errors.is_empty() {
        "the client failed without an error from the server".to_string()
    } else {
        errors.join("; ")
    };
    // `… near 'IDENTIFIED … ' at line 1`: the statement from the error on.
    while let Some(at) = message.find(" near '") {
        let end = message[at + 7..]
            .find("' at line ")
            .map_or(message.len(), |n| at + 7 + n + 1);
        message.replace_range(at..end, " near (statement withheld)");
    }
    for s in statements {
        for w in words(&s.sql) {
            for lit in literals(w.text) {
                if lit.len() >= 8 {
                    message = message.replace(lit, "(withheld)");
                }
            }
        }
    }
    let failed = errors.first().and_then(|e| {
        let n: usize = e
            .split(" at line ")
            .nth(1)?
            .split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()?;
        lines.iter().position(|(a, b)| (*a..=*b).contains(&n))
    });
    (message, failed)
}

/// Quoted parts and hex numbers in a word (the places a hash can be).
fn literals(word: &str) -> Vec<&str> {
    let b = word.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if matches!(b[i], b'\'' | b'"') {
            let end = quoted_end(b, i);
            out.push(&word[i + 1..end.saturating_sub(1).max(i + 1)]);
            i = end;
        } else {
            i += 1;
        }
    }
    if word.starts_with("0x") || word.starts_with("0X") {
        out.push(word.trim_end_matches([',', ';']));
    }
    out
}

/// How a statement is named in a failure: never its text.
pub fn describe(s: &Statement) -> String {
    format!("the {} of {}", s.section.describe(), s.account.sql())
}

/// Whether an account's `SHOW GRANTS` (the current account's, with its active roles) lets it
/// see every database: `SHOW DATABASES` or `ALL PRIVILEGES` on `*.*`.
pub fn sees_every_database(grants: &str) -> bool {
    rows(grants).any(|r| {
        let line = r.join("\t");
        let w = words(&line);
        if !w.first().is_some_and(|x| is(x, "GRANT")) {
            return false;
        }
        let Some(on) = w.iter().position(|x| is(x, "ON")) else {
            return false;
        };
        if w.get(on + 1).map(|x| x.text) != Some("*.*") {
            return false;
        }
        let privileges = line[w[0].end..w[on].start].to_ascii_uppercase();
        privileges
            .split(',')
            .map(str::trim)
            .any(|p| p == "SHOW DATABASES" || p == "ALL PRIVILEGES" || p == "ALL")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(user: &str, host: Option<&str>) -> Listed {
        Listed {
            account: match host {
                Some(h) => Account::user(user, h),
                None => Account::role(user),
            },
            role: host.is_none() && user != "PUBLIC",
        }
    }

    #[test]
    fn accounts_are_quoted_and_read_back() {
        let odd = Account::user("b'ob@x\\y", "10.0.%");
        assert_eq!(odd.sql(), r"'b''ob@x\\y'@'10.0.%'");
        assert_eq!(parse_account(&odd.sql()), Some(odd.clone()));
        assert_eq!(
            parse_account("`b'ob@x\\y`@`10.0.%`"),
            Some(odd),
            "backticks take no backslash escapes"
        );
        assert_eq!(
            parse_account("`we``ird role`"),
            Some(Account::role("we`ird role"))
        );
        assert_eq!(parse_account("``@`%`"), Some(Account::user("", "%")));
        assert_eq!(parse_account("PUBLIC"), Some(Account::role("PUBLIC")));
        assert!(Account::role("PUBLIC").is_public());
        assert_eq!(Account::role("PUBLIC").sql(), "PUBLIC");
        assert_eq!(
            parse_account("'new\\nline'@'%'"),
            Some(Account::user("new\nline", "%"))
        );
        assert_eq!(quote("new\nline"), "'new\\nline'");
        assert_eq!(parse_account("`a`@`b`junk"), None);
        assert_eq!(parse_account(""), None);
    }

    #[test]
    fn system_and_anonymous_accounts_are_left_out() {
        let out = "mariadb.sys\tlocalhost\tN\nroot\tlocalhost\tN\nroot\t%\tN\n\tlocalhost\tN\n\
                   app_user\t%\tN\nreader\t\tY\nPUBLIC\t\tY\nb'ob@x\t10.0.%\tN\nmysql.session\tlocalhost\tN\n";
        let got = parse_accounts(out);
        assert_eq!(
            got,
            vec![
                listed("app_user", Some("%")),
                listed("reader", None),
                Listed {
                    account: Account::role("PUBLIC"),
                    role: true
                },
                listed("b'ob@x", Some("10.0.%")),
            ]
        );
    }

    #[test]
    fn the_show_script_names_each_account() {
        let accounts = vec![listed("b'ob", Some("%")), listed("reader", None)];
        let s = show_script(Flavor::Mysql, &accounts);
        assert!(s.contains("print_identified_with_as_hex = ON"), "{s}");
        assert!(s.contains("SHOW CREATE USER 'b''ob'@'%';\nSHOW GRANTS FOR 'b''ob'@'%';"));
        assert!(s.contains("SELECT '#backup-runner#1';\nSHOW GRANTS FOR 'reader';"));
        assert!(!s.contains("SHOW CREATE USER 'reader'"));
        assert!(!show_script(Flavor::Mariadb, &accounts).contains("as_hex"));
    }

    #[test]
    fn mariadb_definitions_keep_only_the_accounts_own_grants() {
        let accounts = vec![
            listed("alice", Some("%")),
            listed("we'ird role", None),
            Listed {
                account: Account::role("PUBLIC"),
                role: false,
            },
        ];
        let out = "#backup-runner#0\n\
CREATE USER `alice`@`%` IDENTIFIED BY PASSWORD '*1D8F' WITH MAX_USER_CONNECTIONS 5\n\
GRANT `we'ird role` TO `alice`@`%` WITH ADMIN OPTION\n\
GRANT `reader` TO `alice`@`%`\n\
GRANT USAGE ON *.* TO `alice`@`%` IDENTIFIED BY PASSWORD '*1D8F' WITH MAX_USER_CONNECTIONS 5\n\
SET DEFAULT ROLE `reader` FOR `alice`@`%`\n\
#backup-runner#1\n\
GRANT `reader` TO `we'ird role`\n\
GRANT USAGE ON *.* TO `we'ird role`\n\
GRANT USAGE ON *.* TO `reader`\n\
GRANT SELECT ON `app_db`.* TO `reader`\n\
#backup-runner#2\n\
GRANT SELECT ON `app_db`.* TO PUBLIC\n";
        let defs = parse_definitions(Flavor::Mariadb, &accounts, out).unwrap();
        assert_eq!(
            defs[0],
            Definition {
                create: Some(
                    "CREATE USER IF NOT EXISTS `alice`@`%` IDENTIFIED BY PASSWORD '*1D8F' WITH MAX_USER_CONNECTIONS 5"
                        .into()
                ),
                grants: vec![
                    "GRANT `we'ird role` TO `alice`@`%` WITH ADMIN OPTION".into(),
                    "GRANT `reader` TO `alice`@`%`".into(),
                ],
                default_roles: vec!["SET DEFAULT ROLE `reader` FOR `alice`@`%`".into()],
            }
        );
        assert_eq!(
            defs[1],
            Definition {
                create: Some("CREATE ROLE IF NOT EXISTS `we'ird role`".into()),
                grants: vec!["GRANT `reader` TO `we'ird role`".into()],
                default_roles: vec![],
            }
        );
        assert_eq!(defs[2].create, None);
        assert_eq!(defs[2].grants, ["GRANT SELECT ON `app_db`.* TO PUBLIC"]);
        assert!(parse_definitions(Flavor::Mariadb, &accounts, "GRANT x\n").is_err());
    }

    #[test]
    fn mysql_default_roles_move_after_the_grants() {
        let create = "CREATE USER `alice`@`%` IDENTIFIED WITH 'caching_sha2_password' AS 0x2441 DEFAULT ROLE `reader`@`%`,`we'ird role`@`%` REQUIRE NONE PASSWORD EXPIRE DEFAULT ACCOUNT UNLOCK ATTRIBUTE '{\"comment\": \"a DEFAULT ROLE `x`\"}'";
        let (rest, roles) = split_default_role(create);
        assert_eq!(roles.as_deref(), Some("`reader`@`%`,`we'ird role`@`%`"));
        assert_eq!(
            rest,
            "CREATE USER `alice`@`%` IDENTIFIED WITH 'caching_sha2_password' AS 0x2441 REQUIRE NONE PASSWORD EXPIRE DEFAULT ACCOUNT UNLOCK ATTRIBUTE '{\"comment\": \"a DEFAULT ROLE `x`\"}'"
        );
        let (same, none) = split_default_role("CREATE USER `b`@`%` PASSWORD EXPIRE DEFAULT");
        assert_eq!(
            (same.as_str(), none),
            ("CREATE USER `b`@`%` PASSWORD EXPIRE DEFAULT", None)
        );
        let a = listed("alice", Some("%"));
        let def = definition(
            Flavor::Mysql,
            &a,
            vec![
                create.into(),
                "GRANT USAGE ON *.* TO `alice`@`%`".into(),
                "GRANT BACKUP_ADMIN ON *.* TO `alice`@`%`".into(),
                "GRANT `reader`@`%` TO `alice`@`%`".into(),
                "REVOKE INSERT ON `mysql`.* FROM `alice`@`%`".into(),
            ],
        )
        .unwrap();
        assert!(def
            .create
            .as_deref()
            .unwrap()
            .starts_with("CREATE USER IF NOT EXISTS `alice`@`%` IDENTIFIED WITH"));
        assert_eq!(
            def.grants,
            [
                "GRANT BACKUP_ADMIN ON *.* TO `alice`@`%`",
                "GRANT `reader`@`%` TO `alice`@`%`",
                "REVOKE INSERT ON `mysql`.* FROM `alice`@`%`"
            ]
        );
        assert_eq!(
            def.default_roles,
            ["SET DEFAULT ROLE `reader`@`%`,`we'ird role`@`%` TO 'alice'@'%'"]
        );
    }

    #[test]
    fn grants_on_tables_and_routines_name_their_database() {
        let db = |s: &str| object_database(s);
        assert_eq!(
            db("GRANT INSERT, UPDATE (`id`) ON `we``ird.db`.`t` TO `b`@`%`").as_deref(),
            Some("we`ird.db")
        );
        assert_eq!(
            db("GRANT EXECUTE ON PROCEDURE `shop`.`p` TO `a`@`%`").as_deref(),
            Some("shop")
        );
        assert_eq!(
            db("GRANT EXECUTE ON PACKAGE BODY `shop`.`p` TO `a`@`%`").as_deref(),
            Some("shop")
        );
        assert_eq!(db("GRANT SELECT ON `shop`.* TO `a`@`%`"), None);
        assert_eq!(db("GRANT ALL PRIVILEGES ON *.* TO `a`@`%`"), None);
        assert_eq!(db("GRANT PROXY ON ``@`%` TO `a`@`%`"), None);
        assert_eq!(db("GRANT `reader` TO `a`@`%`"), None);
        assert_eq!(db("REVOKE SELECT ON `shop`.`t` FROM `a`@`%`"), None);
    }

    #[test]
    fn grants_on_dropped_tables_and_columns_are_left_out() {
        let accounts = vec![listed("dave", Some("%")), listed("reader", None)];
        let mut defs = vec![
            Definition {
                create: None,
                grants: vec![
                    "GRANT SELECT ON `mysql`.`user` TO `dave`@`%`".into(),
                    "GRANT UPDATE (`b`) ON `shop`.`items` TO `dave`@`%`".into(),
                    "GRANT SELECT ON `shop`.`tmp` TO `dave`@`%`".into(),
                    "GRANT SELECT ON `shop`.* TO `dave`@`%`".into(),
                ],
                default_roles: vec![],
            },
            Definition {
                create: None,
                grants: vec!["GRANT SELECT ON `shop`.`tmp` TO `reader`".into()],
                default_roles: vec![],
            },
        ];
        let dropped = drop_orphans(
            &accounts,
            &mut defs,
            "dave\t%\tshop\titems\ndave\t%\tshop\ttmp\nreader\t\tshop\ttmp\n",
        );
        assert_eq!(
            dropped,
            [
                "'dave'@'%' on `shop`.`items`",
                "'dave'@'%' on `shop`.`tmp`",
                "'reader' on `shop`.`tmp`"
            ]
        );
        assert_eq!(
            defs[0].grants,
            [
                "GRANT SELECT ON `mysql`.`user` TO `dave`@`%`",
                "GRANT SELECT ON `shop`.* TO `dave`@`%`"
            ]
        );
        assert!(defs[1].grants.is_empty());
    }

    #[test]
    fn grants_lose_the_account_attributes() {
        assert_eq!(
            grant_only("GRANT INSERT, UPDATE (`id`, `to x`) ON `app_db`.`t` TO `b'ob@x`@`10.0.%` IDENTIFIED BY PASSWORD '*67' REQUIRE SSL WITH GRANT OPTION MAX_USER_CONNECTIONS 3").as_deref(),
            Some("GRANT INSERT, UPDATE (`id`, `to x`) ON `app_db`.`t` TO `b'ob@x`@`10.0.%` WITH GRANT OPTION")
        );
        assert_eq!(
            grant_only("GRANT USAGE ON *.* TO `a`@`%` IDENTIFIED BY PASSWORD '*67'"),
            None
        );
        assert_eq!(
            grant_only("GRANT USAGE ON *.* TO `a`@`%` WITH GRANT OPTION").as_deref(),
            Some("GRANT USAGE ON *.* TO `a`@`%` WITH GRANT OPTION")
        );
        assert_eq!(
            grant_only("GRANT USAGE ON `db`.* TO `a`@`%`").as_deref(),
            Some("GRANT USAGE ON `db`.* TO `a`@`%`")
        );
        assert_eq!(
            grant_only("GRANT PROXY ON ``@`%` TO `a`@`%` WITH GRANT OPTION").as_deref(),
            Some("GRANT PROXY ON ``@`%` TO `a`@`%` WITH GRANT OPTION")
        );
    }

    fn sample_script() -> String {
        let accounts = vec![
            listed("alice", Some("%")),
            listed("we'ird role", None),
            listed("app_user", Some("%")),
        ];
        let defs = vec![
            Definition {
                create: Some("CREATE USER IF NOT EXISTS `alice`@`%` IDENTIFIED BY PASSWORD '*1D8F9F6F4452904A19308440D35EC8BD1DE0C8FE' COMMENT 'semi;colon\n-- not a heading'".into()),
                grants: vec!["GRANT `we'ird role` TO `alice`@`%`".into(), "REVOKE INSERT ON `mysql`.* FROM `alice`@`%`".into()],
                default_roles: vec!["SET DEFAULT ROLE `we'ird role` FOR `alice`@`%`".into()],
            },
            Definition {
                create: Some("CREATE ROLE IF NOT EXISTS `we'ird role`".into()),
                grants: vec!["GRANT SELECT ON `app_db`.* TO `we'ird role`".into()],
                default_roles: vec![],
            },
            Definition {
                create: Some("CREATE USER IF NOT EXISTS `app_user`@`%` IDENTIFIED BY PASSWORD '*ABCDEF0123456789'".into()),
                grants: vec!["GRANT ALL PRIVILEGES ON `app_db`.* TO `app_user`@`%`".into()],
                default_roles: vec![],
            },
        ];
        script("backup-runner: accounts\nof MariaDB 11.8", &accounts, &defs)
    }

    #[test]
    fn the_script_creates_everything_before_any_grant() {
        let s = sample_script();
        assert!(s.starts_with("-- backup-runner: accounts\n-- of MariaDB 11.8\nSET SESSION sql_mode = '';\n-- create role 'we''ird role'\nCREATE ROLE IF NOT EXISTS `we'ird role`;\n-- create user 'alice'@'%'\n"), "{s}");
        let create = s.rfind("CREATE").unwrap();
        let grant = s.find("GRANT").unwrap();
        let default = s.find("SET DEFAULT ROLE").unwrap();
        assert!(create < grant && grant < default, "{s}");
        let parsed = parse_script(&s).unwrap();
        let sections: Vec<(Section, String)> = parsed
            .iter()
            .map(|p| (p.section, p.account.sql()))
            .collect();
        assert_eq!(
            sections,
            vec![
                (Section::CreateRole, "'we''ird role'".into()),
                (Section::CreateUser, "'alice'@'%'".into()),
                (Section::CreateUser, "'app_user'@'%'".into()),
                (Section::Grants, "'alice'@'%'".into()),
                (Section::Grants, "'alice'@'%'".into()),
                (Section::Grants, "'we''ird role'".into()),
                (Section::Grants, "'app_user'@'%'".into()),
                (Section::DefaultRoles, "'alice'@'%'".into()),
            ]
        );
        assert!(parsed[1]
            .sql
            .ends_with("COMMENT 'semi;colon\n-- not a heading'"));
        assert!(parse_script("-- grants 'a'@'%'\nGRANT x TO y").is_err());
        assert!(parse_script("-- grants 'a'b\nGRANT x TO y;").is_err());
    }

    #[test]
    fn existing_accounts_are_kept_and_the_restoring_account_is_left_alone() {
        let statements = parse_script(&sample_script()).unwrap();
        let existing = vec![
            ("we'ird role".to_string(), String::new()),
            ("app_user".to_string(), "%".to_string()),
        ];
        let me = Account::user("app_user", "%");
        let r = replay(statements.clone(), &existing, &me);
        assert_eq!(r.created, [Account::user("alice", "%")]);
        assert_eq!(r.kept, [Account::role("we'ird role")]);
        assert_eq!(r.myself, Some(me));
        let run: Vec<(Section, String)> = r
            .statements
            .iter()
            .map(|s| (s.section, s.account.sql()))
            .collect();
        assert_eq!(
            run,
            vec![
                (Section::CreateUser, "'alice'@'%'".into()),
                (Section::Grants, "'alice'@'%'".into()),
                (Section::Grants, "'alice'@'%'".into()),
                (Section::Grants, "'we''ird role'".into()),
                (Section::DefaultRoles, "'alice'@'%'".into()),
            ]
        );
        // An existing account gains grants but loses nothing and keeps its default roles.
        let existing = vec![("alice".to_string(), "%".to_string())];
        let r = replay(statements, &existing, &Account::user("root", "localhost"));
        assert_eq!(r.kept, [Account::user("alice", "%")]);
        assert!(r.myself.is_none());
        let alice: Vec<&str> = r
            .statements
            .iter()
            .filter(|s| s.account == Account::user("alice", "%"))
            .map(|s| s.sql.as_str())
            .collect();
        assert_eq!(alice, ["GRANT `we'ird role` TO `alice`@`%`"]);
    }

    #[test]
    fn a_failure_names_the_account_and_withholds_the_statement() {
        let statements = parse_script(&sample_script()).unwrap();
        let (sql, lines) = replay_sql(Flavor::Mariadb, &statements);
        assert!(sql.starts_with("SET SESSION sql_mode = '';\nCREATE ROLE"));
        assert_eq!(lines[0], (2, 2));
        // alice's CREATE USER spans two lines.
        assert_eq!(lines[1], (3, 4));
        assert_eq!(lines[2], (5, 5));
        let stderr = "--------------\nCREATE USER IF NOT EXISTS `alice`@`%` IDENTIFIED BY PASSWORD '*1D8F9F6F4452904A19308440D35EC8BD1DE0C8FE'\n--------------\n\n\
ERROR 1064 (42000) at line 4: You have an error in your SQL syntax; check the manual that corresponds to your MariaDB server version for the right syntax to use near '*1D8F9F6F4452904A19308440D35EC8BD1DE0C8FE' COMMENT' at line 1\n";
        let (message, failed) = replay_failure(stderr, &statements, &lines);
        assert_eq!(failed, Some(1));
        assert_eq!(describe(&statements[1]), "the CREATE USER of 'alice'@'%'");
        assert!(!message.contains("1D8F9F6F"), "{message}");
        assert!(
            message.starts_with("ERROR 1064 (42000) at line 4"),
            "{message}"
        );
        assert!(
            message.contains("near (statement withheld) at line 1"),
            "{message}"
        );
        let (message, failed) = replay_failure(
            "ERROR 1133 (28000) at line 8: Can't find any matching row in the user table for '*ABCDEF0123456789'",
            &statements,
            &lines,
        );
        assert_eq!(failed, Some(5));
        assert!(!message.contains("ABCDEF"), "{message}");
        assert_eq!(replay_failure("", &statements, &lines).1, None);
    }

    #[test]
    fn every_database_is_visible_with_show_databases_or_all() {
        assert!(sees_every_database(
            "GRANT SELECT, SHOW DATABASES ON *.* TO `c`@`%`\n"
        ));
        assert!(sees_every_database(
            "GRANT ALL PRIVILEGES ON *.* TO `root`@`localhost` WITH GRANT OPTION\n"
        ));
        assert!(!sees_every_database(
            "GRANT USAGE ON *.* TO `app_user`@`%`\nGRANT ALL PRIVILEGES ON `app_db`.* TO `app_user`@`%`\n"
        ));
        assert!(!sees_every_database("GRANT `showdb` TO `c`@`%`\n"));
    }
}
