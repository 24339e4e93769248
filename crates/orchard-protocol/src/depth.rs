//! Nesting-depth bounds for untrusted plists, computed iteratively before the recursive `plist` parser runs.
//!
//! Both checks are conservative: they may reject an odd but valid document, never accept one that the
//! parser would nest deeper than the limit. Constructs real plists never use (CDATA, internal DTD subsets,
//! namespaced tags, `<` inside comments or processing instructions, NUL bytes) are rejected outright rather
//! than interpreted, so the scanner and quick-xml cannot disagree about where a tag starts or ends.

use crate::ProtocolError;

fn malformed(reason: &str) -> ProtocolError {
    ProtocolError::Malformed(reason.to_owned())
}

fn is_xml_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

fn find(haystack: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    haystack
        .get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

/// Counts open `<array>`/`<dict>` tags against closes. A self-closing collection still counts one level
/// for its own (empty) collection, exactly like an empty collection in a binary plist.
pub(crate) fn check_xml(bytes: &[u8], max_depth: usize) -> Result<(), ProtocolError> {
    if bytes.contains(&0) {
        return Err(malformed("xml contains NUL bytes"));
    }
    let mut depth = 0usize;
    let mut pos = 0usize;
    while let Some(offset) = bytes
        .get(pos..)
        .and_then(|rest| rest.iter().position(|&b| b == b'<'))
    {
        let start = pos + offset;
        let rest = bytes.get(start..).unwrap_or_default();
        if rest.starts_with(b"<!--") {
            let end =
                find(bytes, start + 4, b"-->").ok_or_else(|| malformed("unterminated comment"))?;
            if bytes
                .get(start + 4..end)
                .unwrap_or_default()
                .contains(&b'<')
            {
                return Err(malformed("'<' inside a comment"));
            }
            pos = end + 3;
            continue;
        }
        if rest.starts_with(b"<![") {
            return Err(malformed("CDATA sections are not supported"));
        }
        if rest.starts_with(b"<!") {
            pos = skip_doctype(bytes, start)?;
            continue;
        }
        if rest.starts_with(b"<?") {
            pos = skip_processing_instruction(bytes, start)?;
            continue;
        }
        let (end, inner) = tag_body(bytes, start)?;
        pos = end + 1;
        if let Some(close) = inner.strip_prefix(b"/") {
            let name = trim_end(close);
            if (name == b"array" || name == b"dict") && depth > 0 {
                depth -= 1;
            }
            continue;
        }
        let self_closing = inner.ends_with(b"/");
        let name_end = inner
            .iter()
            .position(|&b| is_xml_space(b) || b == b'/')
            .unwrap_or(inner.len());
        let name = inner.get(..name_end).unwrap_or_default();
        if name.contains(&b':') {
            return Err(malformed("namespaced xml tags are not supported"));
        }
        if name == b"array" || name == b"dict" {
            if depth + 1 > max_depth {
                return Err(ProtocolError::TooDeep);
            }
            if !self_closing {
                depth += 1;
            }
        }
    }
    Ok(())
}

fn trim_end(mut s: &[u8]) -> &[u8] {
    while let Some((&last, rest)) = s.split_last() {
        if !is_xml_space(last) {
            break;
        }
        s = rest;
    }
    s
}

/// Finds the `>` that ends the tag starting at `start`, honouring quoted attribute values. A tag whose end
/// would differ between a quote-aware and a quote-unaware reader, or that contains `<`, is rejected.
fn tag_body(bytes: &[u8], start: usize) -> Result<(usize, &[u8]), ProtocolError> {
    let mut quote: Option<u8> = None;
    let mut i = start + 1;
    let naive_end = find(bytes, start + 1, b">").ok_or_else(|| malformed("unterminated tag"))?;
    loop {
        let b = *bytes.get(i).ok_or_else(|| malformed("unterminated tag"))?;
        match (quote, b) {
            (_, b'<') => return Err(malformed("'<' inside a tag")),
            (None, b'"' | b'\'') => quote = Some(b),
            (Some(q), _) if q == b => quote = None,
            (None, b'>') => break,
            _ => {}
        }
        i += 1;
    }
    if i != naive_end {
        return Err(malformed("'>' inside a quoted attribute"));
    }
    Ok((i, bytes.get(start + 1..i).unwrap_or_default()))
}

/// `<!DOCTYPE ...>` without an internal subset (Apple's plist header); anything else starting with `<!`
/// is refused.
fn skip_doctype(bytes: &[u8], start: usize) -> Result<usize, ProtocolError> {
    let end = find(bytes, start + 2, b">").ok_or_else(|| malformed("unterminated declaration"))?;
    let body = bytes.get(start + 2..end).unwrap_or_default();
    if !body.starts_with(b"DOCTYPE") {
        return Err(malformed("unsupported xml declaration"));
    }
    if body.iter().any(|&b| matches!(b, b'[' | b'<')) {
        return Err(malformed("internal DTD subsets are not supported"));
    }
    // Quotes are allowed (public/system ids) but must not hide a '>' from us: the first '>' must end it
    // for quote-aware and quote-unaware readers alike, which holds when quotes are balanced before it.
    let doubles = body.iter().filter(|&&b| b == b'"').count();
    let singles = body.iter().filter(|&&b| b == b'\'').count();
    if doubles % 2 != 0 || singles % 2 != 0 {
        return Err(malformed("'>' inside a quoted DOCTYPE id"));
    }
    Ok(end + 1)
}

/// `<? ... ?>`: must not contain `<`, and its first `?>` must end it for every reader (balanced quotes).
fn skip_processing_instruction(bytes: &[u8], start: usize) -> Result<usize, ProtocolError> {
    let end = find(bytes, start + 2, b"?>")
        .ok_or_else(|| malformed("unterminated processing instruction"))?;
    let body = bytes.get(start + 2..end).unwrap_or_default();
    let doubles = body.iter().filter(|&&b| b == b'"').count();
    let singles = body.iter().filter(|&&b| b == b'\'').count();
    if body.contains(&b'<') || doubles % 2 != 0 || singles % 2 != 0 {
        return Err(malformed("unsupported processing instruction"));
    }
    Ok(end + 2)
}

/// Reads the header of a binary plist object table: where each object starts and how wide references are.
struct BinaryPlist<'a> {
    bytes: &'a [u8],
    offset_size: usize,
    ref_size: usize,
    object_count: usize,
    top_object: usize,
    offset_table: usize,
}

fn read_be(bytes: &[u8], at: usize, width: usize) -> Result<u64, ProtocolError> {
    let end = at
        .checked_add(width)
        .ok_or_else(|| malformed("binary offset overflow"))?;
    let slice = bytes
        .get(at..end)
        .ok_or_else(|| malformed("binary plist truncated"))?;
    if width > 8 {
        return Err(malformed("binary integer too wide"));
    }
    Ok(slice.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
}

fn to_usize(v: u64) -> Result<usize, ProtocolError> {
    usize::try_from(v).map_err(|_| malformed("binary plist offset too large"))
}

impl<'a> BinaryPlist<'a> {
    fn parse(bytes: &'a [u8]) -> Result<Self, ProtocolError> {
        const TRAILER: usize = 32;
        if bytes.len() < 8 + TRAILER {
            return Err(malformed("binary plist too short"));
        }
        let t = bytes.len() - TRAILER;
        let offset_size = to_usize(read_be(bytes, t + 6, 1)?)?;
        let ref_size = to_usize(read_be(bytes, t + 7, 1)?)?;
        let object_count = to_usize(read_be(bytes, t + 8, 8)?)?;
        let top_object = to_usize(read_be(bytes, t + 16, 8)?)?;
        let offset_table = to_usize(read_be(bytes, t + 24, 8)?)?;
        if !(1..=8).contains(&offset_size) || !(1..=8).contains(&ref_size) {
            return Err(malformed("binary plist has invalid int sizes"));
        }
        // Every object needs at least one byte of object data and one offset entry, so the count is bounded by
        // the input size; this also bounds the per-object bookkeeping below.
        if object_count == 0 || object_count > bytes.len() || top_object >= object_count {
            return Err(malformed("binary plist has an invalid object count"));
        }
        let table_end = object_count
            .checked_mul(offset_size)
            .and_then(|n| n.checked_add(offset_table))
            .ok_or_else(|| malformed("binary offset table overflow"))?;
        if table_end > t {
            return Err(malformed("binary offset table out of bounds"));
        }
        Ok(Self {
            bytes,
            offset_size,
            ref_size,
            object_count,
            top_object,
            offset_table,
        })
    }

    fn object_offset(&self, index: usize) -> Result<usize, ProtocolError> {
        let at = self.offset_table + index * self.offset_size;
        let offset = to_usize(read_be(self.bytes, at, self.offset_size)?)?;
        if offset >= self.offset_table {
            return Err(malformed("binary object offset out of bounds"));
        }
        Ok(offset)
    }

    /// The objects a collection refers to (keys and values for a dictionary); empty for scalars.
    fn children(&self, index: usize) -> Result<Vec<usize>, ProtocolError> {
        let offset = self.object_offset(index)?;
        let marker = *self
            .bytes
            .get(offset)
            .ok_or_else(|| malformed("binary plist truncated"))?;
        let refs_per_entry = match marker >> 4 {
            0xA | 0xC => 1,
            0xD => 2,
            _ => return Ok(Vec::new()),
        };
        let (count, refs_start) = self.collection_count(marker, offset)?;
        let total = count
            .checked_mul(refs_per_entry)
            .ok_or_else(|| malformed("binary collection too large"))?;
        let refs_end = total
            .checked_mul(self.ref_size)
            .and_then(|n| n.checked_add(refs_start))
            .ok_or_else(|| malformed("binary collection too large"))?;
        if refs_end > self.bytes.len() {
            return Err(malformed("binary collection out of bounds"));
        }
        (0..total)
            .map(|i| {
                let child = to_usize(read_be(
                    self.bytes,
                    refs_start + i * self.ref_size,
                    self.ref_size,
                )?)?;
                if child >= self.object_count {
                    return Err(malformed("binary object reference out of bounds"));
                }
                Ok(child)
            })
            .collect()
    }

    /// Element count of a collection and where its references start.
    fn collection_count(&self, marker: u8, offset: usize) -> Result<(usize, usize), ProtocolError> {
        let low = usize::from(marker & 0x0F);
        if low != 0x0F {
            return Ok((low, offset + 1));
        }
        let int_marker = *self
            .bytes
            .get(offset + 1)
            .ok_or_else(|| malformed("binary plist truncated"))?;
        if int_marker >> 4 != 0x1 {
            return Err(malformed("binary collection count is not an integer"));
        }
        let width = 1usize << (int_marker & 0x0F).min(4);
        if width > 8 {
            return Err(malformed("binary collection count too wide"));
        }
        let count = to_usize(read_be(self.bytes, offset + 2, width)?)?;
        Ok((count, offset + 2 + width))
    }
}

#[derive(Clone, Copy)]
enum Visit {
    New,
    InProgress,
    /// Height of the subtree rooted here (0 for scalars, 1 + deepest child for collections).
    Done(usize),
}

/// Walks the object graph depth-first with an explicit stack; each object is expanded once (heights are
/// memoized), so shared subtrees cannot make the walk exponential, and reference cycles are rejected.
pub(crate) fn check_binary(bytes: &[u8], max_depth: usize) -> Result<(), ProtocolError> {
    let plist = BinaryPlist::parse(bytes)?;
    let mut visits = vec![Visit::New; plist.object_count];
    struct Frame {
        object: usize,
        is_collection: bool,
        children: Vec<usize>,
        next: usize,
        deepest_child: usize,
    }
    let mut stack: Vec<Frame> = Vec::new();
    let mut pending = Some(plist.top_object);
    loop {
        if let Some(object) = pending.take() {
            match visits.get(object).copied() {
                Some(Visit::New) => {
                    let children = plist.children(object)?;
                    let is_collection = is_collection(&plist, object)?;
                    let depth_here = stack.iter().filter(|f| f.is_collection).count()
                        + usize::from(is_collection);
                    if depth_here > max_depth {
                        return Err(ProtocolError::TooDeep);
                    }
                    if let Some(v) = visits.get_mut(object) {
                        *v = Visit::InProgress;
                    }
                    stack.push(Frame {
                        object,
                        is_collection,
                        children,
                        next: 0,
                        deepest_child: 0,
                    });
                }
                Some(Visit::InProgress) => {
                    return Err(malformed("binary plist contains a reference cycle"))
                }
                Some(Visit::Done(height)) => {
                    let depth_above = stack.iter().filter(|f| f.is_collection).count();
                    if depth_above + height > max_depth {
                        return Err(ProtocolError::TooDeep);
                    }
                    if let Some(parent) = stack.last_mut() {
                        parent.deepest_child = parent.deepest_child.max(height);
                    }
                }
                None => return Err(malformed("binary object reference out of bounds")),
            }
        }
        let Some(top) = stack.last_mut() else {
            return Ok(());
        };
        if let Some(&child) = top.children.get(top.next) {
            top.next += 1;
            pending = Some(child);
            continue;
        }
        let height = top.deepest_child + usize::from(top.is_collection);
        let object = top.object;
        stack.pop();
        if let Some(v) = visits.get_mut(object) {
            *v = Visit::Done(height);
        }
        if let Some(parent) = stack.last_mut() {
            parent.deepest_child = parent.deepest_child.max(height);
        }
    }
}

fn is_collection(plist: &BinaryPlist<'_>, object: usize) -> Result<bool, ProtocolError> {
    let offset = plist.object_offset(object)?;
    let marker = *plist
        .bytes
        .get(offset)
        .ok_or_else(|| malformed("binary plist truncated"))?;
    Ok(matches!(marker >> 4, 0xA | 0xC | 0xD))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{parse_value, MAX_PLIST_DEPTH};
    use std::time::{Duration, Instant};

    /// A hand-built binary plist: object i (i < n-1) is a one-element array holding object i+1; the last
    /// object is an empty array. Nesting depth = n.
    fn deep_binary(n: usize) -> Vec<u8> {
        let mut out = b"bplist00".to_vec();
        let mut offsets = Vec::new();
        for i in 0..n {
            offsets.push(out.len());
            if i + 1 < n {
                out.push(0xA1);
                out.extend_from_slice(&((i + 1) as u32).to_be_bytes());
            } else {
                out.push(0xA0);
            }
        }
        let table = out.len();
        for o in &offsets {
            out.extend_from_slice(&(*o as u64).to_be_bytes());
        }
        out.extend_from_slice(&[0; 6]);
        out.push(8); // offset size
        out.push(4); // ref size
        out.extend_from_slice(&(n as u64).to_be_bytes());
        out.extend_from_slice(&0u64.to_be_bytes());
        out.extend_from_slice(&(table as u64).to_be_bytes());
        out
    }

    #[test]
    fn deep_binary_is_rejected_quickly() {
        let started = Instant::now();
        assert_eq!(
            parse_value(&deep_binary(50_000)),
            Err(ProtocolError::TooDeep)
        );
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn binary_at_the_limit_parses() {
        assert!(parse_value(&deep_binary(MAX_PLIST_DEPTH)).is_ok());
        assert_eq!(
            parse_value(&deep_binary(MAX_PLIST_DEPTH + 1)),
            Err(ProtocolError::TooDeep)
        );
    }

    #[test]
    fn binary_cycle_is_rejected() {
        // Object 0 is an array containing itself.
        let mut bytes = deep_binary(2);
        // Rewrite object 0's reference (bytes 9..13) to point at object 0.
        bytes.splice(9..13, 0u32.to_be_bytes());
        assert!(matches!(
            parse_value(&bytes),
            Err(ProtocolError::Malformed(_))
        ));
    }

    #[test]
    fn shared_subtrees_do_not_explode() {
        // 30 levels where each array holds its child twice: 2^30 paths, 30 objects.
        let n = 30;
        let mut out = b"bplist00".to_vec();
        let mut offsets = Vec::new();
        for i in 0..n {
            offsets.push(out.len());
            if i + 1 < n {
                out.push(0xA2);
                out.extend_from_slice(&((i + 1) as u32).to_be_bytes());
                out.extend_from_slice(&((i + 1) as u32).to_be_bytes());
            } else {
                out.push(0xA0);
            }
        }
        let table = out.len();
        for o in &offsets {
            out.extend_from_slice(&(*o as u64).to_be_bytes());
        }
        out.extend_from_slice(&[0; 6]);
        out.extend_from_slice(&[8, 4]);
        out.extend_from_slice(&(n as u64).to_be_bytes());
        out.extend_from_slice(&0u64.to_be_bytes());
        out.extend_from_slice(&(table as u64).to_be_bytes());
        let started = Instant::now();
        assert!(check_binary(&out, MAX_PLIST_DEPTH).is_ok());
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn truncated_binary_never_panics() {
        let full = deep_binary(5);
        for cut in 0..full.len() {
            let _ = parse_value(full.get(..cut).unwrap());
        }
    }

    #[test]
    fn xml_tricks_cannot_hide_depth() {
        let hidden_close =
            "<plist><array><!-- </array> --><array><array></array></array></array></plist>";
        assert!(check_xml(hidden_close.as_bytes(), 2).is_err());
        assert!(check_xml(
            b"<plist><array a=\"></array>\"><array></array></array></plist>",
            1
        )
        .is_err());
        assert!(check_xml(b"<plist><x:array><array/></x:array></plist>", 32).is_err());
        assert!(check_xml(b"<![CDATA[</array>]]>", 32).is_err());
        assert!(check_xml(b"<!DOCTYPE plist [<!ENTITY a \"b\">]><plist/>", 32).is_err());
        assert!(check_xml(b"<?pi \"?></array>\"?>", 32).is_err());
        assert!(check_xml(b"<!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\" \"http://www.apple.com/DTDs/PropertyList-1.0.dtd\"><plist/>", 32).is_ok());
    }
}
