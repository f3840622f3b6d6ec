//! A small element tree for one record of an XML export (a Disqus `<post>`, a WordPress
//! `<item>`), read from a streaming quick-xml reader: records are small, files are not.

use super::{ImportError, at_byte};
use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};
use std::io::BufRead;

/// One element: its name as written (with any `prefix:`), attributes, text and children.
#[derive(Clone, Debug, Default)]
pub(crate) struct Elem {
    pub name: String,
    pub attrs: Vec<(String, String)>,
    pub text: String,
    pub children: Vec<Elem>,
}

impl Elem {
    /// The first child with this name.
    pub fn child(&self, name: &str) -> Option<&Elem> {
        self.children.iter().find(|c| c.name == name)
    }

    /// The trimmed text of a child, `None` when missing or blank.
    pub fn text_of(&self, name: &str) -> Option<String> {
        self.child(name)
            .map(|c| c.text.trim())
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
    }

    /// An attribute's value.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// An XML reader with the settings every import uses.
pub(crate) fn reader<R: BufRead>(r: R) -> Reader<R> {
    let mut reader = Reader::from_reader(r);
    let config = reader.config_mut();
    config.check_end_names = true;
    config.expand_empty_elements = false;
    reader
}

/// The quick-xml error as an import error at its position.
pub(crate) fn xml_error<R>(r: &Reader<R>, base: u64, e: quick_xml::Error) -> ImportError {
    at_byte(
        base + r.error_position(),
        format!("not well-formed XML: {e}"),
    )
}

fn name_of(start: &BytesStart<'_>) -> String {
    String::from_utf8_lossy(start.name().as_ref()).into_owned()
}

/// The element whose start tag was just read, with everything inside it, up to its end tag.
pub(crate) fn read_elem<R: BufRead>(
    r: &mut Reader<R>,
    start: &BytesStart<'_>,
    empty: bool,
    buf: &mut Vec<u8>,
    base: u64,
) -> Result<Elem, ImportError> {
    let mut root = start_elem(r, start, base)?;
    if empty {
        return Ok(root);
    }
    // An explicit stack instead of recursion: a hostile file cannot overflow the call stack.
    let mut stack: Vec<Elem> = Vec::new();
    loop {
        buf.clear();
        let event = r.read_event_into(buf).map_err(|e| xml_error(r, base, e))?;
        let current = stack.last_mut().unwrap_or(&mut root);
        match event {
            Event::Start(s) => {
                let child = start_elem(r, &s, base)?;
                if stack.len() > 64 {
                    return Err(at_byte(
                        base + r.buffer_position(),
                        "elements nested more than 64 deep",
                    ));
                }
                stack.push(child);
            }
            Event::Empty(s) => {
                let child = start_elem(r, &s, base)?;
                current.children.push(child);
            }
            Event::Text(t) => {
                let text = t.decode().map_err(|e| {
                    at_byte(
                        base + r.buffer_position(),
                        format!("bad text encoding: {e}"),
                    )
                })?;
                current.text.push_str(&text);
            }
            Event::CData(t) => {
                let text = t.decode().map_err(|e| {
                    at_byte(
                        base + r.buffer_position(),
                        format!("bad text encoding: {e}"),
                    )
                })?;
                current.text.push_str(&text);
            }
            Event::GeneralRef(g) => {
                let at = base + r.buffer_position();
                let c = match g.resolve_char_ref() {
                    Ok(Some(c)) => c,
                    Ok(None) => match &*g {
                        b"amp" => '&',
                        b"lt" => '<',
                        b"gt" => '>',
                        b"quot" => '"',
                        b"apos" => '\'',
                        other => {
                            return Err(at_byte(
                                at,
                                format!("unknown entity &{};", String::from_utf8_lossy(other)),
                            ));
                        }
                    },
                    Err(e) => return Err(at_byte(at, format!("bad character reference: {e}"))),
                };
                current.text.push(c);
            }
            Event::End(_) => match stack.pop() {
                Some(done) => stack.last_mut().unwrap_or(&mut root).children.push(done),
                None => return Ok(root),
            },
            Event::Eof => {
                return Err(at_byte(
                    base + r.buffer_position(),
                    format!("the file ends inside <{}>", root.name),
                ));
            }
            Event::Comment(_) | Event::Decl(_) | Event::PI(_) | Event::DocType(_) => {}
        }
    }
}

fn start_elem<R>(r: &Reader<R>, s: &BytesStart<'_>, base: u64) -> Result<Elem, ImportError> {
    let mut attrs = Vec::new();
    for a in s.attributes() {
        let a = a.map_err(|e| {
            at_byte(
                base + r.buffer_position(),
                format!("bad attribute in <{}>: {e}", name_of(s)),
            )
        })?;
        let value = a.unescape_value().map_err(|e| {
            at_byte(
                base + r.buffer_position(),
                format!("bad attribute value in <{}>: {e}", name_of(s)),
            )
        })?;
        attrs.push((
            String::from_utf8_lossy(a.key.as_ref()).into_owned(),
            value.into_owned(),
        ));
    }
    Ok(Elem {
        name: name_of(s),
        attrs,
        text: String::new(),
        children: Vec::new(),
    })
}

/// Parses a boolean the way the exports write them.
pub(crate) fn boolean(e: &Elem, name: &str, at: u64) -> Result<bool, ImportError> {
    match e.text_of(name).as_deref() {
        None | Some("false") | Some("0") => Ok(false),
        Some("true") | Some("1") => Ok(true),
        Some(other) => Err(at_byte(
            at,
            format!("<{name}> must be true or false, not {other:?}"),
        )),
    }
}
