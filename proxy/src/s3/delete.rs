//! The DeleteObjects request document, read strictly into a typed value
//! and written back canonically.
//!
//! The keys a DeleteObjects names decide what the upstream deletes, so the
//! proxy must read them exactly as the upstream's XML parser will. Rather
//! than chase every parser's reading of odd documents, the proxy reads the
//! client's document into a `DeleteRequest`, checks that, and sends the
//! upstream a document it writes itself from the value (`to_xml`): plain
//! UTF-8, no CDATA, no comments, one namespace, escaped text. The client's
//! bytes never reach the upstream.
//!
//! What `parse` accepts, and why:
//! - UTF-8 only, with or without its BOM. Any other BOM, a declaration
//!   naming another encoding or another XML version, and bytes that are not
//!   UTF-8 are refused: a UTF-16 document would otherwise be text the proxy
//!   cannot read and the upstream can.
//! - Line ends are normalised before parsing (`\r\n` and `\r` become `\n`)
//!   as XML 1.0 section 2.11 requires of every parser; `&#13;` stays `\r`.
//! - Text is read as a standard parser reads it: character data, entity and
//!   character references and CDATA sections concatenated, comments
//!   skipped. Only the five predefined entities exist: document type
//!   declarations are refused, and with them every other entity. Processing
//!   instructions other than the leading XML declaration are refused.
//!   Every character, raw or referenced, must be one XML 1.0 allows.
//! - Element names are matched on their local name, in S3's namespace
//!   (`http://s3.amazonaws.com/doc/2006-03-01/`) or in none, with or without
//!   a prefix bound to it: `<s3:Key xmlns:s3="…S3's…">` is a Key, as a
//!   namespace-aware parser reads it. An element in another namespace, with
//!   an unbound prefix, or with a name the schema does not define is
//!   refused, not skipped. Attributes other than namespace declarations are
//!   refused.
//! - Structure as S3's schema has it: root `Delete` with 1 to 1000 `Object`
//!   and at most one `Quiet`; each `Object` with exactly one non-empty
//!   `Key` and at most one each of `VersionId`, `ETag`, `LastModifiedTime`,
//!   `Size`, in any order. Text anywhere else must be whitespace (raw, not
//!   referenced, not CDATA).
//! - Values: `Key`, `VersionId` and `ETag` exactly as written (whitespace is
//!   part of a key); `Quiet` (`true`, `false`, `1`, `0`), `Size` (decimal)
//!   and `LastModifiedTime` with surrounding whitespace removed, as XML
//!   Schema collapses the whitespace of booleans, numbers and timestamps.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use md5::Digest as _;
use quick_xml::events::{BytesStart, Event};
use quick_xml::name::ResolveResult;

use crate::error::DocumentError;

/// S3's namespace, the only one an element may be in besides none.
pub const S3_NAMESPACE: &str = "http://s3.amazonaws.com/doc/2006-03-01/";

/// S3's limit on the objects one DeleteObjects names (more is `MalformedXML`).
pub const MAX_OBJECTS: usize = 1000;

/// One `<Object>`: S3's `ObjectIdentifier`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ObjectIdentifier {
    pub key: String,
    pub version_id: Option<String>,
    /// Deletes only if the object's ETag matches (conditional delete).
    pub etag: Option<String>,
    /// Deletes only if the object was last modified at this time.
    pub last_modified_time: Option<String>,
    /// Deletes only if the object has this size.
    pub size: Option<u64>,
}

/// A DeleteObjects request body. Built by `parse`, whose checks make every
/// string one `to_xml` can write (XML 1.0 characters only).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeleteRequest {
    pub quiet: bool,
    pub objects: Vec<ObjectIdentifier>,
}

/// The elements of the document, by local name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Element {
    Delete,
    Object,
    Quiet,
    Key,
    VersionId,
    ETag,
    LastModifiedTime,
    Size,
}

impl Element {
    fn of(local: &[u8]) -> Option<Self> {
        Some(match local {
            b"Delete" => Self::Delete,
            b"Object" => Self::Object,
            b"Quiet" => Self::Quiet,
            b"Key" => Self::Key,
            b"VersionId" => Self::VersionId,
            b"ETag" => Self::ETag,
            b"LastModifiedTime" => Self::LastModifiedTime,
            b"Size" => Self::Size,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Self::Delete => "Delete",
            Self::Object => "Object",
            Self::Quiet => "Quiet",
            Self::Key => "Key",
            Self::VersionId => "VersionId",
            Self::ETag => "ETag",
            Self::LastModifiedTime => "LastModifiedTime",
            Self::Size => "Size",
        }
    }

    /// Whether the element holds a value (text) rather than elements.
    fn is_leaf(self) -> bool {
        !matches!(self, Self::Delete | Self::Object)
    }
}

/// Where the reader is in the document.
enum At {
    /// Before the root element; whether anything (even a comment) was read.
    Prolog {
        started: bool,
    },
    InDelete,
    InObject,
    /// Inside a value element, with the text read so far.
    InLeaf {
        element: Element,
        text: String,
    },
    /// After the root element closed.
    Epilog,
}

/// The parts of one `<Object>` read so far.
#[derive(Default)]
struct ObjectParts {
    key: Option<String>,
    version_id: Option<String>,
    etag: Option<String>,
    last_modified_time: Option<String>,
    size: Option<u64>,
}

impl ObjectParts {
    fn set(&mut self, element: Element, text: String) -> Result<(), DocumentError> {
        let duplicate = || DocumentError::Duplicate { element: element.name() };
        fn put<T>(slot: &mut Option<T>, value: T, duplicate: impl Fn() -> DocumentError) -> Result<(), DocumentError> {
            match slot {
                Some(_) => Err(duplicate()),
                None => {
                    *slot = Some(value);
                    Ok(())
                }
            }
        }
        match element {
            Element::Key if text.is_empty() => Err(DocumentError::EmptyKey),
            Element::Key => put(&mut self.key, text, duplicate),
            Element::VersionId => put(&mut self.version_id, text, duplicate),
            Element::ETag => put(&mut self.etag, text, duplicate),
            Element::LastModifiedTime => {
                let t = collapse(&text);
                // A timestamp: no markup, no inner whitespace (the upstream parses it).
                if t.is_empty() || !t.bytes().all(|b| b.is_ascii_alphanumeric() || b".:+-".contains(&b)) {
                    return Err(DocumentError::Value { element: element.name() });
                }
                put(&mut self.last_modified_time, t.to_owned(), duplicate)
            }
            Element::Size => {
                let t = collapse(&text);
                let size = (!t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
                    .then(|| t.parse::<u64>().ok())
                    .flatten()
                    .ok_or(DocumentError::Value { element: element.name() })?;
                put(&mut self.size, size, duplicate)
            }
            Element::Delete | Element::Object | Element::Quiet => Err(DocumentError::Element),
        }
    }

    fn finish(self) -> Result<ObjectIdentifier, DocumentError> {
        Ok(ObjectIdentifier {
            key: self.key.ok_or(DocumentError::MissingKey)?,
            version_id: self.version_id,
            etag: self.etag,
            last_modified_time: self.last_modified_time,
            size: self.size,
        })
    }
}

/// XML 1.0's `Char` production.
fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..='\u{10FFFF}')
}

/// XML's whitespace (`S`).
fn is_xml_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

fn collapse(s: &str) -> &str {
    s.trim_matches(|c: char| c.is_ascii() && is_xml_space(c as u8))
}

/// The document as text: UTF-8 (BOM dropped), XML characters only, line
/// ends normalised.
fn decode(body: &[u8]) -> Result<String, DocumentError> {
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    // UTF-16 and UTF-32 BOMs (FE FF, FF FE, 00 00 FE FF) are not UTF-8
    // anyway; a UTF-16 document without a BOM decodes to NULs, which are
    // not XML characters.
    let text = std::str::from_utf8(body).map_err(|_| DocumentError::NotUtf8)?;
    if !text.chars().all(is_xml_char) {
        return Err(DocumentError::Character);
    }
    Ok(text.replace("\r\n", "\n").replace('\r', "\n"))
}

/// The element's kind if it is in S3's namespace or none, and its
/// attributes are namespace declarations only.
fn element_of(ns: &ResolveResult<'_>, e: &BytesStart<'_>) -> Result<Element, DocumentError> {
    match ns {
        ResolveResult::Unbound => {}
        ResolveResult::Bound(n) if n.as_ref() == S3_NAMESPACE.as_bytes() => {}
        _ => return Err(DocumentError::Element),
    }
    for attr in e.attributes().with_checks(true) {
        let attr = attr.map_err(|_| DocumentError::Syntax)?;
        let key = attr.key.as_ref();
        if key != b"xmlns" && !key.starts_with(b"xmlns:") {
            return Err(DocumentError::Attribute);
        }
    }
    Element::of(e.local_name().as_ref()).ok_or(DocumentError::Element)
}

fn check_declaration(decl: &quick_xml::events::BytesDecl<'_>) -> Result<(), DocumentError> {
    let bad = || DocumentError::Declaration;
    if decl.version().map_err(|_| bad())?.as_ref() != b"1.0" {
        return Err(bad());
    }
    if let Some(encoding) = decl.encoding()
        && !encoding.map_err(|_| bad())?.eq_ignore_ascii_case(b"UTF-8")
    {
        return Err(DocumentError::NotUtf8);
    }
    if let Some(standalone) = decl.standalone()
        && !matches!(standalone.map_err(|_| bad())?.as_ref(), b"yes" | b"no")
    {
        return Err(bad());
    }
    Ok(())
}

/// Text that may stand between elements: raw whitespace only.
fn check_space(raw: &[u8]) -> Result<(), DocumentError> {
    if raw.iter().all(|&b| is_xml_space(b)) { Ok(()) } else { Err(DocumentError::Text) }
}

impl DeleteRequest {
    /// Reads a client's DeleteObjects body (see the module comment for
    /// what is accepted).
    pub fn parse(body: &[u8]) -> Result<Self, DocumentError> {
        let text = decode(body)?;
        let mut reader = quick_xml::NsReader::from_str(&text);
        let config = reader.config_mut();
        config.check_end_names = true;
        config.check_comments = true;
        config.allow_unmatched_ends = false;
        config.expand_empty_elements = true;
        config.trim_text(false);

        let mut at = At::Prolog { started: false };
        let mut request = DeleteRequest::default();
        let mut quiet: Option<bool> = None;
        let mut object = ObjectParts::default();
        loop {
            let (ns, event) = reader.read_resolved_event().map_err(|_| DocumentError::Syntax)?;
            at = match (at, event) {
                (_, Event::DocType(_)) => return Err(DocumentError::Doctype),
                (_, Event::PI(_)) => return Err(DocumentError::ProcessingInstruction),
                (At::Prolog { started: false }, Event::Decl(decl)) => {
                    check_declaration(&decl)?;
                    At::Prolog { started: true }
                }
                // A declaration anywhere but at the very start is not well-formed.
                (_, Event::Decl(_)) => return Err(DocumentError::Syntax),
                (At::InLeaf { element, mut text }, Event::Text(t)) => {
                    text.push_str(&t.unescape().map_err(|_| DocumentError::Syntax)?);
                    At::InLeaf { element, text }
                }
                (At::InLeaf { element, mut text }, Event::CData(c)) => {
                    text.push_str(std::str::from_utf8(&c.into_inner()).map_err(|_| DocumentError::NotUtf8)?);
                    At::InLeaf { element, text }
                }
                (at, Event::Comment(_)) => match at {
                    At::Prolog { .. } => At::Prolog { started: true },
                    at => at,
                },
                (at, Event::Text(t)) => {
                    check_space(&t)?;
                    match at {
                        At::Prolog { .. } => At::Prolog { started: true },
                        at => at,
                    }
                }
                (_, Event::CData(_)) => return Err(DocumentError::Text),
                (at, Event::Start(e)) => {
                    let element = element_of(&ns, &e)?;
                    match (at, element) {
                        (At::Prolog { .. }, Element::Delete) => At::InDelete,
                        (At::InDelete, Element::Object) => {
                            if request.objects.len() == MAX_OBJECTS {
                                return Err(DocumentError::TooManyObjects { max: MAX_OBJECTS });
                            }
                            At::InObject
                        }
                        (At::InDelete, Element::Quiet) => At::InLeaf { element, text: String::new() },
                        (At::InObject, e) if e.is_leaf() && e != Element::Quiet => {
                            At::InLeaf { element, text: String::new() }
                        }
                        _ => return Err(DocumentError::Element),
                    }
                }
                // Empty elements are expanded into Start and End.
                (_, Event::Empty(_)) => return Err(DocumentError::Syntax),
                (at, Event::End(_)) => match at {
                    At::InLeaf { element: Element::Quiet, text } => {
                        let value = match collapse(&text) {
                            "true" | "1" => true,
                            "false" | "0" => false,
                            _ => return Err(DocumentError::Value { element: "Quiet" }),
                        };
                        if quiet.replace(value).is_some() {
                            return Err(DocumentError::Duplicate { element: "Quiet" });
                        }
                        At::InDelete
                    }
                    At::InLeaf { element, text } => {
                        if !text.chars().all(is_xml_char) {
                            return Err(DocumentError::Character);
                        }
                        object.set(element, text)?;
                        At::InObject
                    }
                    At::InObject => {
                        request.objects.push(std::mem::take(&mut object).finish()?);
                        At::InDelete
                    }
                    At::InDelete => At::Epilog,
                    // quick-xml refuses unmatched ends; kept for completeness.
                    At::Prolog { .. } | At::Epilog => return Err(DocumentError::Syntax),
                },
                (At::Epilog, Event::Eof) => break,
                (_, Event::Eof) => return Err(DocumentError::Syntax),
            };
        }
        if request.objects.is_empty() {
            return Err(DocumentError::NoObjects);
        }
        request.quiet = quiet.unwrap_or(false);
        Ok(request)
    }

    /// The keys, in document order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.objects.iter().map(|o| o.key.as_str())
    }

    /// The canonical document: S3's namespace, no declaration, every value
    /// escaped so a standard parser reads back exactly this value.
    pub fn to_xml(&self) -> String {
        let mut doc = String::with_capacity(64 + self.objects.len() * 64);
        doc.push_str("<Delete xmlns=\"");
        doc.push_str(S3_NAMESPACE);
        doc.push_str("\">");
        for o in &self.objects {
            doc.push_str("<Object>");
            leaf(&mut doc, "Key", &o.key);
            if let Some(v) = &o.version_id {
                leaf(&mut doc, "VersionId", v);
            }
            if let Some(v) = &o.etag {
                leaf(&mut doc, "ETag", v);
            }
            if let Some(v) = &o.last_modified_time {
                leaf(&mut doc, "LastModifiedTime", v);
            }
            if let Some(v) = o.size {
                leaf(&mut doc, "Size", &v.to_string());
            }
            doc.push_str("</Object>");
        }
        if self.quiet {
            doc.push_str("<Quiet>true</Quiet>");
        }
        doc.push_str("</Delete>");
        doc
    }
}

/// `<name>text</name>` with the text escaped: markup characters as
/// entities, and `\r` as a character reference (a raw one would be read as
/// `\n`).
fn leaf(doc: &mut String, name: &str, text: &str) {
    doc.push('<');
    doc.push_str(name);
    doc.push('>');
    for c in text.chars() {
        match c {
            '&' => doc.push_str("&amp;"),
            '<' => doc.push_str("&lt;"),
            '>' => doc.push_str("&gt;"),
            '\r' => doc.push_str("&#13;"),
            c => doc.push(c),
        }
    }
    doc.push_str("</");
    doc.push_str(name);
    doc.push('>');
}

/// The `Content-MD5` header value of a body (S3 requires one on
/// DeleteObjects, and the proxy's document is not the client's).
pub fn content_md5(body: &[u8]) -> String {
    STANDARD.encode(md5::Md5::digest(body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ProxyError;

    fn keys(doc: &[u8]) -> Vec<String> {
        DeleteRequest::parse(doc).unwrap().keys().map(str::to_owned).collect()
    }

    fn refused(doc: &[u8]) -> DocumentError {
        match DeleteRequest::parse(doc) {
            Ok(r) => panic!("accepted {:?}: {r:?}", String::from_utf8_lossy(doc)),
            Err(e) => e,
        }
    }

    /// parse → serialize → parse gives the same value, and the canonical
    /// document is a fixed point.
    fn round_trip(doc: &[u8]) -> DeleteRequest {
        let value = DeleteRequest::parse(doc).unwrap();
        let xml = value.to_xml();
        let again = DeleteRequest::parse(xml.as_bytes()).unwrap();
        assert_eq!(again, value);
        assert_eq!(again.to_xml(), xml);
        // A lenient reader sees the keys the proxy checked.
        let lenient = crate::s3::xml::texts_of(xml.as_bytes(), b"Key").unwrap();
        assert_eq!(lenient, value.keys().collect::<Vec<_>>());
        value
    }

    #[test]
    fn reads_what_sdks_send() {
        let doc = br#"<?xml version="1.0" encoding="UTF-8"?>
<Delete xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Object><Key>team-a/x</Key></Object>
  <Object><Key>team-a/y</Key><VersionId>3HL4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY</VersionId></Object>
  <Quiet>true</Quiet>
</Delete>"#;
        let r = round_trip(doc);
        assert!(r.quiet);
        assert_eq!(r.objects.len(), 2);
        assert_eq!(r.objects[1].version_id.as_deref(), Some("3HL4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY"));
        assert_eq!(
            r.to_xml(),
            "<Delete xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Object><Key>team-a/x</Key></Object>\
             <Object><Key>team-a/y</Key><VersionId>3HL4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY</VersionId></Object>\
             <Quiet>true</Quiet></Delete>"
        );
        // No namespace, no declaration, Quiet absent or false.
        let r = round_trip(b"<Delete><Object><Key>k</Key></Object><Quiet>false</Quiet></Delete>");
        assert!(!r.quiet);
        assert!(!round_trip(b"<Delete><Object><Key>k</Key></Object></Delete>").quiet);
        assert!(round_trip(b"<Delete><Quiet> 1 </Quiet><Object><Key>k</Key></Object></Delete>").quiet);
    }

    #[test]
    fn conditional_fields_are_read_and_written() {
        let doc = br#"<Delete><Object><Size> 42 </Size><ETag>"abc"</ETag><Key>k</Key>
            <LastModifiedTime>2025-01-02T03:04:05.000Z</LastModifiedTime></Object></Delete>"#;
        let r = round_trip(doc);
        assert_eq!(
            r.objects[0],
            ObjectIdentifier {
                key: "k".into(),
                version_id: None,
                etag: Some("\"abc\"".into()),
                last_modified_time: Some("2025-01-02T03:04:05.000Z".into()),
                size: Some(42),
            }
        );
        assert!(matches!(
            refused(b"<Delete><Object><Key>k</Key><Size>-1</Size></Object></Delete>"),
            DocumentError::Value { element: "Size" }
        ));
        assert!(matches!(
            refused(b"<Delete><Object><Key>k</Key><Size>1e3</Size></Object></Delete>"),
            DocumentError::Value { .. }
        ));
        assert!(matches!(
            refused(b"<Delete><Object><Key>k</Key><LastModifiedTime>a b</LastModifiedTime></Object></Delete>"),
            DocumentError::Value { .. }
        ));
        assert!(matches!(
            refused(b"<Delete><Object><Key>k</Key></Object><Quiet>yes</Quiet></Delete>"),
            DocumentError::Value { element: "Quiet" }
        ));
    }

    #[test]
    fn cdata_entities_and_comments_read_as_a_standard_parser_reads_them() {
        assert_eq!(keys(b"<Delete><Object><Key><![CDATA[team-b/secret]]></Key></Object></Delete>"), ["team-b/secret"]);
        assert_eq!(
            keys(b"<Delete><Object><Key>team-<![CDATA[b/]]><!-- x -->se&#99;r&#x65;t</Key></Object></Delete>"),
            ["team-b/secret"]
        );
        assert_eq!(
            keys(b"<Delete><Object><Key>a&amp;b&lt;c&gt;d&quot;e&apos;f</Key></Object></Delete>"),
            ["a&b<c>d\"e'f"]
        );
        assert_eq!(keys(b"<Delete><Object><Key><![CDATA[<&>]]]]><![CDATA[>]]></Key></Object></Delete>"), ["<&>]]>"]);
        // Whitespace is part of a key; line ends are normalised, `&#13;` is not.
        assert_eq!(keys(b"<Delete><Object><Key> a\r\nb\rc&#13;\t</Key></Object></Delete>"), [" a\nb\nc\r\t"]);
        for doc in [
            &b"<Delete><Object><Key><![CDATA[x]]>&#13;&lt;]]&gt;</Key></Object></Delete>"[..],
            b"<Delete><Object><Key>  </Key></Object></Delete>",
            b"<Delete><Object><Key>\xE2\x82\xAC \xF0\x9F\x98\x80</Key></Object></Delete>",
        ] {
            round_trip(doc);
        }
        assert!(matches!(refused(b"<Delete><Object><Key>&nbsp;</Key></Object></Delete>"), DocumentError::Syntax));
        assert!(matches!(refused(b"<Delete><Object><Key>a & b</Key></Object></Delete>"), DocumentError::Syntax));
    }

    #[test]
    fn only_utf8_is_read() {
        let doc = "<Delete><Object><Key>team-b/secret</Key></Object></Delete>";
        let utf16 = |bom: &[u8], big: bool| {
            let mut out = bom.to_vec();
            for u in doc.encode_utf16() {
                out.extend_from_slice(&if big { u.to_be_bytes() } else { u.to_le_bytes() });
            }
            out
        };
        assert!(matches!(refused(&utf16(b"\xFF\xFE", false)), DocumentError::NotUtf8));
        assert!(matches!(refused(&utf16(b"\xFE\xFF", true)), DocumentError::NotUtf8));
        // Without a BOM, UTF-16 of ASCII is UTF-8 with NULs.
        assert!(matches!(refused(&utf16(b"", false)), DocumentError::Character));
        assert!(matches!(refused(&utf16(b"", true)), DocumentError::Character));
        let mut utf32 = b"\x00\x00\xFE\xFF".to_vec();
        utf32.extend(doc.chars().flat_map(|c| (c as u32).to_be_bytes()));
        assert!(matches!(refused(&utf32), DocumentError::NotUtf8));
        assert!(matches!(refused(&utf32[4..]), DocumentError::Character));
        // UTF-8's own BOM is fine.
        assert_eq!(keys(&[b"\xEF\xBB\xBF", doc.as_bytes()].concat()), ["team-b/secret"]);
        // Declarations naming another encoding or version.
        for decl in [
            r#"<?xml version="1.0" encoding="UTF-16"?>"#,
            r#"<?xml version="1.0" encoding="ISO-8859-1"?>"#,
            r#"<?xml version="1.0" encoding="UTF-7"?>"#,
        ] {
            assert!(matches!(refused(format!("{decl}{doc}").as_bytes()), DocumentError::NotUtf8), "{decl}");
        }
        assert!(matches!(refused(format!(r#"<?xml version="1.1"?>{doc}"#).as_bytes()), DocumentError::Declaration));
        assert_eq!(
            keys(format!(r#"<?xml version="1.0" encoding="utf-8" standalone="yes"?>{doc}"#).as_bytes()),
            ["team-b/secret"]
        );
        // A declaration that is not first.
        assert!(matches!(refused(format!(r#" <?xml version="1.0"?>{doc}"#).as_bytes()), DocumentError::Syntax));
        // Latin-1 bytes, and characters XML does not allow, raw or referenced.
        assert!(matches!(refused(b"<Delete><Object><Key>caf\xE9</Key></Object></Delete>"), DocumentError::NotUtf8));
        assert!(matches!(refused(b"<Delete><Object><Key>a\x01</Key></Object></Delete>"), DocumentError::Character));
        assert!(matches!(refused(b"<Delete><Object><Key>a&#1;</Key></Object></Delete>"), DocumentError::Character));
        assert!(matches!(
            refused("<Delete><Object><Key>a&#xFFFE;</Key></Object></Delete>".as_bytes()),
            DocumentError::Character
        ));
        assert!(matches!(refused(b"<Delete><Object><Key>a&#0;</Key></Object></Delete>"), DocumentError::Syntax));
    }

    #[test]
    fn doctypes_and_processing_instructions_are_refused() {
        let entity = br#"<?xml version="1.0"?><!DOCTYPE Delete [<!ENTITY k "team-b/secret">]><Delete><Object><Key>&k;</Key></Object></Delete>"#;
        assert!(matches!(refused(entity), DocumentError::Doctype));
        assert!(matches!(
            refused(b"<!DOCTYPE Delete><Delete><Object><Key>k</Key></Object></Delete>"),
            DocumentError::Doctype
        ));
        assert!(matches!(
            refused(b"<?xml-stylesheet href=\"x\"?><Delete><Object><Key>k</Key></Object></Delete>"),
            DocumentError::ProcessingInstruction
        ));
        assert!(matches!(
            refused(b"<Delete><Object><Key>a<?pi x?>b</Key></Object></Delete>"),
            DocumentError::ProcessingInstruction
        ));
    }

    #[test]
    fn namespaces_s3s_or_none() {
        let prefixed = br#"<s3:Delete xmlns:s3="http://s3.amazonaws.com/doc/2006-03-01/"><s3:Object><s3:Key>team-b/secret</s3:Key></s3:Object></s3:Delete>"#;
        assert_eq!(round_trip(prefixed).keys().collect::<Vec<_>>(), ["team-b/secret"]);
        let mixed = br#"<Delete xmlns="http://s3.amazonaws.com/doc/2006-03-01/" xmlns:s3="http://s3.amazonaws.com/doc/2006-03-01/"><Object><s3:Key>k</s3:Key></Object></Delete>"#;
        assert_eq!(keys(mixed), ["k"]);
        for doc in [
            // Another default namespace, another prefix's namespace, an unbound prefix.
            &br#"<Delete xmlns="urn:other"><Object><Key>k</Key></Object></Delete>"#[..],
            br#"<Delete xmlns:o="urn:other"><Object><o:Key>k</o:Key></Object></Delete>"#,
            br#"<Delete><Object><s3:Key>k</s3:Key></Object></Delete>"#,
            br#"<Delete><Object xmlns="urn:other"><Key>k</Key></Object></Delete>"#,
        ] {
            assert!(matches!(refused(doc), DocumentError::Element), "{}", String::from_utf8_lossy(doc));
        }
        // Namespace declarations are the only attributes.
        let attr = br#"<Delete><Object><Key xml:space="preserve">k</Key></Object></Delete>"#;
        assert!(matches!(refused(attr), DocumentError::Attribute));
        assert!(matches!(
            refused(br#"<Delete id="1"><Object><Key>k</Key></Object></Delete>"#),
            DocumentError::Attribute
        ));
    }

    #[test]
    fn structure_is_s3s_schema() {
        use DocumentError as E;
        type Case = (&'static [u8], fn(&E) -> bool);
        let cases: &[Case] = &[
            (b"<Delete><Object><Key>a</Key><Key>b</Key></Object></Delete>", |e| {
                matches!(e, E::Duplicate { element: "Key" })
            }),
            (b"<Delete><Object><Key>a</Key><VersionId>1</VersionId><VersionId>2</VersionId></Object></Delete>", |e| {
                matches!(e, E::Duplicate { element: "VersionId" })
            }),
            (b"<Delete><Object><Key>a</Key></Object><Quiet>true</Quiet><Quiet>false</Quiet></Delete>", |e| {
                matches!(e, E::Duplicate { element: "Quiet" })
            }),
            (b"<Delete><Object><VersionId>1</VersionId></Object></Delete>", |e| matches!(e, E::MissingKey)),
            (b"<Delete><Object/></Delete>", |e| matches!(e, E::MissingKey)),
            (b"<Delete><Object><Key/></Object></Delete>", |e| matches!(e, E::EmptyKey)),
            (b"<Delete><Object><Key></Key></Object></Delete>", |e| matches!(e, E::EmptyKey)),
            (b"<Delete></Delete>", |e| matches!(e, E::NoObjects)),
            (b"<Delete/>", |e| matches!(e, E::NoObjects)),
            (b"<Delete><Quiet>true</Quiet></Delete>", |e| matches!(e, E::NoObjects)),
            // Unknown elements are refused, not skipped.
            (b"<Delete><Object><Key>a</Key><Extra>x</Extra></Object></Delete>", |e| matches!(e, E::Element)),
            (b"<Delete><Object><Key>a</Key></Object><Object2/></Delete>", |e| matches!(e, E::Element)),
            (b"<Delete><Object><Key><Key>a</Key></Key></Object></Delete>", |e| matches!(e, E::Element)),
            (b"<Delete><Object><Key>a</Key><Quiet>true</Quiet></Object></Delete>", |e| matches!(e, E::Element)),
            (b"<Delete><Key>a</Key></Delete>", |e| matches!(e, E::Element)),
            (b"<Object><Key>a</Key></Object>", |e| matches!(e, E::Element)),
            (b"<delete><object><key>a</key></object></delete>", |e| matches!(e, E::Element)),
            (b"<Delete><Object><Key>a</Key></Object></Delete><Delete/>", |e| matches!(e, E::Element)),
            // Text only in value elements; whitespace elsewhere must be raw.
            (b"<Delete>x<Object><Key>a</Key></Object></Delete>", |e| matches!(e, E::Text)),
            (b"<Delete><Object>&#32;<Key>a</Key></Object></Delete>", |e| matches!(e, E::Text)),
            (b"<Delete><Object><![CDATA[ ]]><Key>a</Key></Object></Delete>", |e| matches!(e, E::Text)),
            (b"<Delete><Object><Key>a</Key></Object></Delete>x", |e| matches!(e, E::Text)),
            // Not well-formed.
            (b"<Delete><Object><Key>a</Key></Object></Delete", |e| matches!(e, E::Syntax)),
            (b"<Delete><Object><Key>a</Key></Object>", |e| matches!(e, E::Syntax)),
            (b"<Delete><Object><Key>a</Object></Key></Delete>", |e| matches!(e, E::Syntax)),
            (b"<Delete><Object><Key>a</Key></Object></Delete></Delete>", |e| matches!(e, E::Syntax)),
            (b"", |e| matches!(e, E::Syntax)),
        ];
        for (doc, expected) in cases {
            let e = refused(doc);
            assert!(expected(&e), "{}: {e:?}", String::from_utf8_lossy(doc));
            assert_eq!(ProxyError::from(e).code(), "MalformedXML");
        }
        // Whitespace and comments around everything are fine.
        let doc = b"<!-- c --> \n<Delete> <!-- c --> <Object>\n\t<Key>a</Key> </Object>\n</Delete>\n<!-- c -->\n";
        assert_eq!(keys(doc), ["a"]);
    }

    #[test]
    fn at_most_1000_objects() {
        let doc = |n: usize| {
            let mut d = String::from("<Delete>");
            for i in 0..n {
                d.push_str(&format!("<Object><Key>k{i}</Key></Object>"));
            }
            d + "</Delete>"
        };
        assert_eq!(round_trip(doc(1000).as_bytes()).objects.len(), 1000);
        assert!(matches!(refused(doc(1001).as_bytes()), DocumentError::TooManyObjects { max: 1000 }));
    }

    #[test]
    fn content_md5_is_base64_md5() {
        assert_eq!(content_md5(b""), "1B2M2Y8AsgTpgAmY7PhCfg==");
    }
}
