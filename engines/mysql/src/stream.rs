//! Watching and rewriting the SQL stream.
//!
//! The dump tools escape newlines inside string values (`\n`) and print binary data as hex, so a
//! raw newline in the stream only ever separates lines of SQL: a statement ends at a line ending
//! in `;`, and a row of an INSERT is one line (beginning `INSERT` or `(`).

use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use runner_core::engine::StreamFilter;

/// Passes a dump through and records its largest statement, in bytes.
pub struct StatementMeter<R> {
    inner: R,
    current: u64,
    last: u8,
    largest: Arc<AtomicU64>,
}

impl<R> StatementMeter<R> {
    pub fn new(inner: R, largest: Arc<AtomicU64>) -> Self {
        StatementMeter {
            inner,
            current: 0,
            last: b'\n',
            largest,
        }
    }

    fn observe(&mut self, chunk: &[u8]) {
        let mut start = 0;
        for i in memchr::memchr_iter(b'\n', chunk) {
            let before = if i > 0 { chunk[i - 1] } else { self.last };
            self.current += (i - start) as u64 + 1;
            if before == b';' {
                self.largest.fetch_max(self.current, Ordering::Relaxed);
                self.current = 0;
            }
            start = i + 1;
        }
        self.current += (chunk.len() - start) as u64;
        if let Some(&b) = chunk.last() {
            self.last = b;
        }
        // A statement still open counts too (the last one may lack its newline).
        self.largest.fetch_max(self.current, Ordering::Relaxed);
    }
}

impl<R: Read> Read for StatementMeter<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.observe(&buf[..n]);
        Ok(n)
    }
}

/// Lines longer than this are passed through unread: only data lines are that long.
const MAX_DEFINITION_LINE: usize = 1 << 20;

/// Rewrites the definitions in a dump on its way to the client: every `DEFINER=…` to
/// `DEFINER=CURRENT_USER` (`RESTORE_DEFINER=current_user`), and references to the source
/// database (`` `src`.`` in defaults, views and routines) to the target's name. Data lines
/// (`INSERT …` and the rows that follow it) are never touched.
pub struct DefinitionRewrite {
    definer: bool,
    rename: Option<(Vec<u8>, Vec<u8>)>,
    line: Vec<u8>,
    /// The current line is data (or too long to be a definition): passed through as it comes.
    passing: bool,
    /// Rewrites made, for the log.
    pub rewrites: Arc<AtomicU64>,
}

impl DefinitionRewrite {
    pub fn new(definer: bool, rename: Option<(&str, &str)>) -> Self {
        DefinitionRewrite {
            definer,
            rename: rename.map(|(from, to)| {
                (
                    format!("{}.", crate::commands::ident(from)).into_bytes(),
                    format!("{}.", crate::commands::ident(to)).into_bytes(),
                )
            }),
            line: Vec::new(),
            passing: false,
            rewrites: Arc::default(),
        }
    }

    fn is_data(line: &[u8]) -> bool {
        line.starts_with(b"INSERT ") || line.starts_with(b"(") || line.starts_with(b"REPLACE ")
    }

    fn rewrite_line(&mut self, out: &mut Vec<u8>) {
        let mut line = std::mem::take(&mut self.line);
        if self.definer {
            line = replace_definers(&line, &self.rewrites);
        }
        if let Some((from, to)) = &self.rename {
            line = replace_all(&line, from, to, &self.rewrites);
        }
        out.extend_from_slice(&line);
        self.line = line;
        self.line.clear();
    }
}

impl StreamFilter for DefinitionRewrite {
    fn filter(&mut self, mut input: &[u8], out: &mut Vec<u8>) {
        while !input.is_empty() {
            let end = memchr::memchr(b'\n', input);
            let (piece, rest) = match end {
                Some(i) => (&input[..=i], &input[i + 1..]),
                None => (input, &[][..]),
            };
            if self.passing {
                out.extend_from_slice(piece);
            } else {
                self.line.extend_from_slice(piece);
                let decided_data = self.line.len() >= 8 && Self::is_data(&self.line);
                if decided_data || self.line.len() > MAX_DEFINITION_LINE {
                    out.append(&mut self.line);
                    self.passing = true;
                } else if end.is_some() {
                    if Self::is_data(&self.line) {
                        out.append(&mut self.line);
                    } else {
                        self.rewrite_line(out);
                    }
                }
            }
            if end.is_some() {
                self.passing = false;
            }
            input = rest;
        }
    }

    fn finish(&mut self, out: &mut Vec<u8>) {
        if !self.line.is_empty() {
            self.rewrite_line(out);
        }
    }
}

fn replace_all(line: &[u8], from: &[u8], to: &[u8], count: &AtomicU64) -> Vec<u8> {
    let mut out = Vec::with_capacity(line.len());
    let mut i = 0;
    while i < line.len() {
        if line[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
            count.fetch_add(1, Ordering::Relaxed);
        } else {
            out.push(line[i]);
            i += 1;
        }
    }
    out
}

/// `` DEFINER=`user`@`host` `` (backticks doubled inside) → `DEFINER=CURRENT_USER`.
fn replace_definers(line: &[u8], count: &AtomicU64) -> Vec<u8> {
    const KEY: &[u8] = b"DEFINER=`";
    let mut out = Vec::with_capacity(line.len());
    let mut i = 0;
    while i < line.len() {
        if line[i..].starts_with(KEY) {
            if let Some(end) = definer_end(line, i + KEY.len() - 1) {
                out.extend_from_slice(b"DEFINER=CURRENT_USER");
                count.fetch_add(1, Ordering::Relaxed);
                i = end;
                continue;
            }
        }
        out.push(line[i]);
        i += 1;
    }
    out
}

/// From the opening backtick of `` `user`@`host` ``, the index just past it.
fn definer_end(line: &[u8], open: usize) -> Option<usize> {
    let user_end = quoted_end(line, open)?;
    if line.get(user_end) != Some(&b'@') {
        return None;
    }
    quoted_end(line, user_end + 1)
}

/// From an opening backtick, the index just past the closing one (doubled backticks inside).
fn quoted_end(line: &[u8], open: usize) -> Option<usize> {
    if line.get(open) != Some(&b'`') {
        return None;
    }
    let mut i = open + 1;
    while i < line.len() {
        if line[i] == b'`' {
            if line.get(i + 1) == Some(&b'`') {
                i += 2;
                continue;
            }
            return Some(i + 1);
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meter(chunks: &[&[u8]]) -> u64 {
        let largest = Arc::new(AtomicU64::new(0));
        let mut m = StatementMeter::new(std::io::empty(), largest.clone());
        for c in chunks {
            m.observe(c);
        }
        largest.load(Ordering::Relaxed)
    }

    #[test]
    fn the_largest_statement_spans_its_lines() {
        let dump = b"SET x=1;\nINSERT INTO t VALUES\n(1,'aaaa'),\n(2,'bb');\nSELECT 1;\n";
        let insert = "INSERT INTO t VALUES\n(1,'aaaa'),\n(2,'bb');\n".len() as u64;
        assert_eq!(meter(&[dump]), insert);
        // However the stream is cut.
        for cut in 1..dump.len() {
            assert_eq!(meter(&[&dump[..cut], &dump[cut..]]), insert, "cut at {cut}");
        }
        assert_eq!(meter(&[b"no newline at all"]), 17);
    }

    fn run(f: &mut DefinitionRewrite, input: &[u8], chunk: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for c in input.chunks(chunk) {
            f.filter(c, &mut out);
        }
        f.finish(&mut out);
        out
    }

    #[test]
    fn definers_and_the_database_name_are_rewritten_outside_data() {
        let input = b"/*!50013 DEFINER=`report_owner`@`%` SQL SECURITY DEFINER */\n\
CREATE DEFINER=`we``ird`@`10.0.0.%` PROCEDURE `p`()\n\
  `bid` bigint(20) DEFAULT nextval(`app_db`.`seq`),\n\
INSERT INTO `t` VALUES (1,'DEFINER=`x`@`y` `app_db`.`t`');\n\
(2,'`app_db`.`z`'),\n\
select `app_db`.`t`.`id` AS `id`";
        let expected = b"/*!50013 DEFINER=CURRENT_USER SQL SECURITY DEFINER */\n\
CREATE DEFINER=CURRENT_USER PROCEDURE `p`()\n\
  `bid` bigint(20) DEFAULT nextval(`app_copy`.`seq`),\n\
INSERT INTO `t` VALUES (1,'DEFINER=`x`@`y` `app_db`.`t`');\n\
(2,'`app_db`.`z`'),\n\
select `app_copy`.`t`.`id` AS `id`";
        for chunk in [1, 2, 3, 7, 64, 4096] {
            let mut f = DefinitionRewrite::new(true, Some(("app_db", "app_copy")));
            let out = run(&mut f, input, chunk);
            assert_eq!(
                String::from_utf8_lossy(&out),
                String::from_utf8_lossy(expected),
                "chunk {chunk}"
            );
            assert_eq!(f.rewrites.load(Ordering::Relaxed), 4);
        }
        // Only what was asked for.
        let mut f = DefinitionRewrite::new(false, None);
        assert_eq!(run(&mut f, input, 5), input);
    }
}
