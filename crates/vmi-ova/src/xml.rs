//! A small namespace-resolved element tree over quick-xml, the only XML reading this crate does.
//!
//! Every element and attribute carries its namespace URI (never its prefix: exporters choose
//! prefixes freely), its local name, and for elements the text directly inside them with the
//! predefined entities and character references resolved. Depth and size are bounded, so an
//! adversarial descriptor costs at most a few times its own size in memory.

use quick_xml::events::Event;
use quick_xml::events::attributes::Attribute;
use quick_xml::name::{QName, ResolveResult};
use quick_xml::reader::NsReader;

/// Deepest element nesting accepted. Real descriptors nest about ten levels (VirtualBox's
/// embedded machine configuration is the deepest); this bound keeps the tree's recursion safe.
pub(crate) const MAX_DEPTH: usize = 100;

/// Most elements accepted in one document (a large vCenter export has a few thousand).
pub(crate) const MAX_ELEMENTS: usize = 100_000;

/// Most attributes accepted on one element (quick-xml checks duplicates quadratically).
pub(crate) const MAX_ATTRIBUTES: usize = 256;

/// Most namespace bindings in scope at once (each prefix resolution scans them).
pub(crate) const MAX_NAMESPACE_BINDINGS: usize = 256;

/// A namespace-resolved element.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Element {
    /// The namespace URI, `None` for an element in no namespace.
    pub ns: Option<String>,
    pub name: String,
    pub attrs: Vec<Attr>,
    pub children: Vec<Element>,
    /// Text (and CDATA) directly inside this element, concatenated, entities resolved.
    pub text: String,
}

/// A namespace-resolved attribute (`xmlns` declarations are not kept).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Attr {
    /// The namespace URI; `None` for an unprefixed attribute (which is in no namespace, whatever
    /// the default namespace is).
    pub ns: Option<String>,
    pub name: String,
    pub value: String,
}

/// Why a document is not acceptable XML.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct XmlError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl Element {
    /// `true` when the element has this namespace and local name.
    pub fn is(&self, ns: &str, name: &str) -> bool {
        self.name == name && self.ns.as_deref() == Some(ns)
    }

    /// Child elements with this namespace and local name.
    pub fn children_named<'a>(
        &'a self,
        ns: &'a str,
        name: &'a str,
    ) -> impl Iterator<Item = &'a Element> + 'a {
        self.children.iter().filter(move |c| c.is(ns, name))
    }

    /// The first child element with this namespace and local name.
    pub fn child(&self, ns: &str, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.is(ns, name))
    }

    /// The first child element with this local name, whatever its namespace.
    pub fn child_any_ns(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    /// The first element with this local name among the descendants down to `max_depth`
    /// levels, whatever its namespace, nearer levels first.
    pub fn descendant_any_ns(&self, name: &str, max_depth: usize) -> Option<&Element> {
        let mut level: Vec<&Element> = vec![self];
        for _ in 0..max_depth {
            let next: Vec<&Element> = level.iter().flat_map(|e| e.children.iter()).collect();
            if let Some(found) = next.iter().find(|e| e.name == name) {
                return Some(found);
            }
            level = next;
        }
        None
    }

    /// The value of the attribute with this namespace and local name.
    pub fn attr(&self, ns: Option<&str>, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|a| a.name == name && a.ns.as_deref() == ns)
            .map(|a| a.value.as_str())
    }

    /// The value of an attribute with this local name, whatever its namespace: the first in
    /// `preferred` order of namespaces (`None` = unqualified), then any other.
    pub fn attr_prefer(&self, preferred: &[Option<&str>], name: &str) -> Option<&str> {
        preferred
            .iter()
            .find_map(|ns| self.attr(*ns, name))
            .or_else(|| {
                self.attrs
                    .iter()
                    .find(|a| a.name == name)
                    .map(|a| a.value.as_str())
            })
    }

    /// The element's text, trimmed; `None` when empty.
    pub fn trimmed_text(&self) -> Option<&str> {
        Some(self.text.trim()).filter(|t| !t.is_empty())
    }
}

fn position(input: &str, offset: u64) -> (usize, usize) {
    let offset = usize::try_from(offset)
        .unwrap_or(usize::MAX)
        .min(input.len());
    let before = input.as_bytes().get(..offset).unwrap_or_default();
    let line = before.split(|b| *b == b'\n').count();
    let column = before.iter().rev().take_while(|b| **b != b'\n').count() + 1;
    (line, column)
}

fn resolve(r: ResolveResult<'_>) -> Result<Option<String>, String> {
    match r {
        ResolveResult::Bound(ns) => Ok(Some(ns.into_inner().to_owned())),
        ResolveResult::Unbound => Ok(None),
        ResolveResult::Unknown(prefix) => {
            Err(format!("namespace prefix '{prefix}' is not declared"))
        }
    }
}

fn is_xmlns(key: QName<'_>) -> bool {
    key.as_namespace_binding().is_some()
}

fn start_element(
    reader: &NsReader<&[u8]>,
    e: &quick_xml::events::BytesStart<'_>,
) -> Result<Element, String> {
    let (ns, local) = reader.resolver().resolve_element(e.name());
    let ns = resolve(ns)?;
    let mut attrs = Vec::new();
    for (n, a) in e.attributes().enumerate() {
        if n >= MAX_ATTRIBUTES {
            return Err(format!(
                "more than {MAX_ATTRIBUTES} attributes on one element"
            ));
        }
        let a: Attribute<'_> = a.map_err(|err| err.to_string())?;
        if is_xmlns(a.key) {
            continue;
        }
        let (ans, alocal) = reader.resolver().resolve_attribute(a.key);
        let value = a
            .normalized_value(quick_xml::XmlVersion::Implicit1_0)
            .map_err(|err| {
                format!(
                    "attribute {}: {err}",
                    String::from_utf8_lossy(a.key.into_inner().as_bytes())
                )
            })?;
        attrs.push(Attr {
            ns: resolve(ans)?,
            name: alocal.into_inner().to_owned(),
            value: value.into_owned(),
        });
    }
    Ok(Element {
        ns,
        name: local.into_inner().to_owned(),
        attrs,
        children: Vec::new(),
        text: String::new(),
    })
}

/// Parses `input` into its root element.
pub(crate) fn parse(input: &str) -> Result<Element, XmlError> {
    let mut reader = NsReader::from_str(input);
    reader
        .resolver_mut()
        .set_max_namespace_bindings(MAX_NAMESPACE_BINDINGS);
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    let mut elements = 0usize;
    let fail = |reader: &NsReader<&[u8]>, message: String, at_error: bool| {
        let offset = if at_error {
            reader.error_position()
        } else {
            reader.buffer_position()
        };
        let (line, column) = position(input, offset);
        XmlError {
            line,
            column,
            message,
        }
    };
    loop {
        let event = match reader.read_event() {
            Ok(ev) => ev,
            Err(e) => return Err(fail(&reader, e.to_string(), true)),
        };
        match event {
            Event::Start(ref e) | Event::Empty(ref e) => {
                let is_empty = matches!(event, Event::Empty(_));
                if root.is_some() {
                    return Err(fail(
                        &reader,
                        "content after the root element".into(),
                        false,
                    ));
                }
                elements += 1;
                if elements > MAX_ELEMENTS {
                    return Err(fail(
                        &reader,
                        format!("more than {MAX_ELEMENTS} elements"),
                        false,
                    ));
                }
                if stack.len() >= MAX_DEPTH {
                    return Err(fail(
                        &reader,
                        format!("elements nested deeper than {MAX_DEPTH} levels"),
                        false,
                    ));
                }
                let el = start_element(&reader, e).map_err(|m| fail(&reader, m, false))?;
                if is_empty {
                    close(&mut stack, &mut root, el);
                } else {
                    stack.push(el);
                }
            }
            Event::End(_) => match stack.pop() {
                Some(el) => close(&mut stack, &mut root, el),
                None => {
                    return Err(fail(&reader, "unexpected end tag".into(), false));
                }
            },
            Event::Text(t) => {
                let text = t.xml10_content();
                push_text(&mut stack, &text).map_err(|m| fail(&reader, m, false))?;
            }
            Event::CData(t) => {
                let text = t.xml10_content();
                push_text(&mut stack, &text).map_err(|m| fail(&reader, m, false))?;
            }
            Event::GeneralRef(r) => {
                let resolved = resolve_reference(&r).map_err(|m| fail(&reader, m, false))?;
                push_text(&mut stack, &resolved).map_err(|m| fail(&reader, m, false))?;
            }
            Event::Eof => break,
            Event::Comment(_) | Event::Decl(_) | Event::PI(_) | Event::DocType(_) => {}
        }
    }
    if let Some(open) = stack.last() {
        return Err(fail(
            &reader,
            format!("element <{}> is not closed", open.name),
            false,
        ));
    }
    root.ok_or_else(|| fail(&reader, "the document has no root element".into(), false))
}

/// `&amp;`, `&lt;`, … and `&#65;`/`&#x41;`; other entities (declared in a DTD) are refused.
fn resolve_reference(r: &quick_xml::events::BytesRef<'_>) -> Result<String, String> {
    match r.resolve_char_ref() {
        Ok(Some(c)) => Ok(c.to_string()),
        Ok(None) => {
            let name = r.xml10_content();
            quick_xml::escape::resolve_predefined_entity(&name)
                .map(str::to_owned)
                .ok_or_else(|| format!("unknown entity &{name};"))
        }
        Err(e) => Err(e.to_string()),
    }
}

fn close(stack: &mut [Element], root: &mut Option<Element>, el: Element) {
    match stack.last_mut() {
        Some(parent) => parent.children.push(el),
        None => *root = Some(el),
    }
}

fn push_text(stack: &mut [Element], text: &str) -> Result<(), String> {
    match stack.last_mut() {
        Some(el) => {
            el.text.push_str(text);
            Ok(())
        }
        None if text.trim().is_empty() => Ok(()),
        None => Err("text outside the root element".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_are_resolved_whatever_the_prefix() {
        let a = parse(
            r#"<a:R xmlns:a="urn:x" xmlns:b="urn:y"><b:C b:k="v" k2="w">t&amp;u&#65;</b:C></a:R>"#,
        )
        .unwrap();
        assert!(a.is("urn:x", "R"));
        let c = a.child("urn:y", "C").unwrap();
        assert_eq!(c.attr(Some("urn:y"), "k"), Some("v"));
        assert_eq!(c.attr(None, "k2"), Some("w"));
        assert_eq!(c.text, "t&uA");
    }

    #[test]
    fn the_default_namespace_applies_to_elements_not_attributes() {
        let a = parse(r#"<R xmlns="urn:x" k="v"><C/></R>"#).unwrap();
        assert!(a.is("urn:x", "R"));
        assert_eq!(a.attr(None, "k"), Some("v"));
        assert!(a.child("urn:x", "C").is_some());
    }

    #[test]
    fn malformed_documents_say_where() {
        let e = parse("<a>\n<b></a>").unwrap_err();
        assert_eq!(e.line, 2, "{e:?}");
        let e = parse("<p:a/>").unwrap_err();
        assert!(e.message.contains("prefix 'p'"), "{e:?}");
        let e = parse("<a>&custom;</a>").unwrap_err();
        assert!(e.message.contains("&custom;"), "{e:?}");
        let e = parse("<a/><b/>").unwrap_err();
        assert!(e.message.contains("after the root"), "{e:?}");
        assert!(parse("").is_err());
        assert!(parse("<a>").is_err());
        let deep = "<a>".repeat(MAX_DEPTH + 1);
        assert!(parse(&deep).unwrap_err().message.contains("deeper"));
        let attrs = (0..=MAX_ATTRIBUTES)
            .map(|i| format!(" a{i}=\"\""))
            .collect::<Vec<_>>()
            .concat();
        let e = parse(&format!("<a{attrs}/>")).unwrap_err();
        assert!(e.message.contains("attributes"), "{e:?}");
        let ns = (0..=MAX_NAMESPACE_BINDINGS)
            .map(|i| format!(" xmlns:p{i}=\"urn:{i}\""))
            .collect::<Vec<_>>()
            .concat();
        assert!(parse(&format!("<a{ns}/>")).is_err());
    }
}
