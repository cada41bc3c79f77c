//! Just enough of MPEG-DASH MPDs (ISO/IEC 23009-1) for the cache node to
//! prefetch what a new version of a live MPD lists: the segment URLs of
//! every representation, from `SegmentTemplate` with a `SegmentTimeline`
//! (`$Number$` or `$Time$` addressing) or from a `SegmentList`, with
//! `BaseURL`s resolved level by level (MPD, Period, AdaptationSet,
//! Representation) and template attributes inherited downwards.
//!
//! A `SegmentTemplate` with `@duration` and no timeline is not expanded:
//! such an MPD does not change as segments are published (players compute
//! the numbers from the wall clock), so there is no new version to read.
//!
//! Parsing never fails: text that is not an MPD yields `None`, and what
//! an MPD describes in a way this module does not know is left out.

use roxmltree::Node;

/// Segments kept per representation: a timeline that claims more (an
/// `@r` of a billion, a VOD title) is read by its last ones only, which
/// are the ones a live player asks for next.
pub const MAX_PER_REPRESENTATION: usize = 1024;

/// What an MPD lists.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Mpd {
    /// `@type="dynamic"`: a live presentation that gains segments. A
    /// static one (the default) lists all it ever will.
    pub dynamic: bool,
    /// Per representation, in document order: its initialization segment
    /// (if any), then its media segments oldest first, as absolute URLs.
    pub representations: Vec<Vec<url::Url>>,
}

/// Whether `text` looks like an MPD rather than an HLS playlist: XML.
pub fn looks_like_mpd(text: &str) -> bool {
    text.trim_start_matches('\u{feff}')
        .trim_start()
        .starts_with('<')
}

/// The MPD `text` fetched from `url` (which its relative URLs resolve
/// against); `None` when it is not XML or its root is not an `MPD`.
pub fn parse(text: &str, url: &url::Url) -> Option<Mpd> {
    let doc = roxmltree::Document::parse(text).ok()?;
    let root = doc.root_element();
    if root.tag_name().name() != "MPD" {
        return None;
    }
    let mut mpd = Mpd {
        dynamic: root.attribute("type") == Some("dynamic"),
        representations: Vec::new(),
    };
    let base = base_url(root, url.clone());
    for period in children(root, "Period") {
        let base = base_url(period, base.clone());
        let template = Template::default().inherit(child(period, "SegmentTemplate"));
        for set in children(period, "AdaptationSet") {
            let base = base_url(set, base.clone());
            let template = template.clone().inherit(child(set, "SegmentTemplate"));
            for rep in children(set, "Representation") {
                let base = base_url(rep, base.clone());
                let id = rep.attribute("id").unwrap_or("");
                let bandwidth = rep.attribute("bandwidth").unwrap_or("");
                let mut uris = Vec::new();
                if let Some(list) = child(rep, "SegmentList") {
                    uris.extend(segment_list(list, &base));
                } else {
                    let template = template.clone().inherit(child(rep, "SegmentTemplate"));
                    let vars = Vars { id, bandwidth };
                    uris.extend(template.uris(&vars, &base));
                }
                mpd.representations.push(uris);
            }
        }
    }
    Some(mpd)
}

fn children<'a, 'i>(node: Node<'a, 'i>, name: &'static str) -> impl Iterator<Item = Node<'a, 'i>> {
    node.children()
        .filter(move |c| c.is_element() && c.tag_name().name() == name)
}

fn child<'a, 'i>(node: Node<'a, 'i>, name: &'static str) -> Option<Node<'a, 'i>> {
    children(node, name).next()
}

/// `base` with the level's first `BaseURL` applied (§5.6.4: each level
/// resolves against the one above).
fn base_url(level: Node, base: url::Url) -> url::Url {
    child(level, "BaseURL")
        .and_then(|b| b.text())
        .and_then(|t| base.join(t.trim()).ok())
        .unwrap_or(base)
}

/// A `SegmentList`'s initialization and `SegmentURL@media`s.
fn segment_list(list: Node, base: &url::Url) -> Vec<url::Url> {
    let init = child(list, "Initialization").and_then(|i| i.attribute("sourceURL"));
    let media = children(list, "SegmentURL").filter_map(|s| s.attribute("media"));
    let all: Vec<&str> = init.into_iter().chain(media).collect();
    let keep = all.len().saturating_sub(MAX_PER_REPRESENTATION + 1);
    all[keep..]
        .iter()
        .filter_map(|u| base.join(u).ok())
        .collect()
}

/// A `SegmentTemplate`'s attributes as inherited so far (§5.3.9.1: a
/// lower level's element overrides the attributes it carries).
#[derive(Clone, Default)]
struct Template {
    media: Option<String>,
    initialization: Option<String>,
    start_number: Option<u64>,
    /// `(t, d, r, n)` of each `S`, from the lowest level that has a timeline.
    timeline: Option<Vec<[Option<i64>; 4]>>,
}

impl Template {
    fn inherit(mut self, element: Option<Node>) -> Template {
        let Some(e) = element else { return self };
        if let Some(m) = e.attribute("media") {
            self.media = Some(m.to_string());
        }
        if let Some(i) = e.attribute("initialization") {
            self.initialization = Some(i.to_string());
        }
        if let Some(n) = e.attribute("startNumber").and_then(|n| n.parse().ok()) {
            self.start_number = Some(n);
        }
        if let Some(timeline) = child(e, "SegmentTimeline") {
            let number = |s: Node, a| s.attribute(a).and_then(|v| v.parse::<i64>().ok());
            self.timeline = Some(
                children(timeline, "S")
                    .map(|s| {
                        [
                            number(s, "t"),
                            number(s, "d"),
                            number(s, "r"),
                            number(s, "n"),
                        ]
                    })
                    .collect(),
            );
        }
        self
    }

    fn uris(&self, vars: &Vars, base: &url::Url) -> Vec<url::Url> {
        let mut out = Vec::new();
        if let Some(init) = &self.initialization {
            out.extend(substitute(init, vars, None).and_then(|u| base.join(&u).ok()));
        }
        let (Some(media), Some(timeline)) = (&self.media, &self.timeline) else {
            return out;
        };
        for (time, number) in expand(timeline, self.start_number.unwrap_or(1)) {
            let at = Address { number, time };
            if let Some(u) = substitute(media, vars, Some(at)).and_then(|u| base.join(&u).ok()) {
                out.push(u);
            }
        }
        out
    }
}

/// The `(time, number)` of each segment a timeline lists, the last
/// [`MAX_PER_REPRESENTATION`] only.
fn expand(timeline: &[[Option<i64>; 4]], start_number: u64) -> Vec<(u64, u64)> {
    // Runs of segments: (first time, duration, count, first number).
    let mut runs: Vec<(u64, u64, u64, u64)> = Vec::new();
    let (mut time, mut number) = (0u64, start_number);
    for (i, [t, d, r, n]) in timeline.iter().enumerate() {
        let Some(d) = d.filter(|d| *d > 0).map(|d| d as u64) else {
            // A segment without a duration ends what can be known.
            break;
        };
        if let Some(t) = t.filter(|t| *t >= 0) {
            time = t as u64;
        }
        if let Some(n) = n.filter(|n| *n >= 0) {
            number = n as u64;
        }
        let count = match r.unwrap_or(0) {
            // Repeats until the next S's start (§5.3.9.6); the last S's
            // open end is bounded by the period, which a live MPD leaves
            // open: counted once.
            r if r < 0 => timeline
                .get(i + 1)
                .and_then(|next| next[0])
                .filter(|next| *next as u64 > time)
                .map_or(1, |next| (next as u64 - time).div_ceil(d)),
            r => r as u64 + 1,
        };
        runs.push((time, d, count, number));
        time = time.saturating_add(d.saturating_mul(count));
        number = number.saturating_add(count);
    }
    let mut out = Vec::new();
    for &(t, d, count, n) in runs.iter().rev() {
        let room = MAX_PER_REPRESENTATION - out.len();
        for k in (count.saturating_sub(room as u64)..count).rev() {
            out.push((t.saturating_add(d.saturating_mul(k)), n.saturating_add(k)));
        }
        if out.len() == MAX_PER_REPRESENTATION {
            break;
        }
    }
    out.reverse();
    out
}

struct Vars<'a> {
    id: &'a str,
    bandwidth: &'a str,
}

#[derive(Clone, Copy)]
struct Address {
    number: u64,
    time: u64,
}

/// A template with its identifiers replaced (§5.3.9.4.4): `$$`,
/// `$RepresentationID$`, `$Bandwidth$`, and for a media segment `$Number$`
/// and `$Time$`, each but the first with an optional `%0<width>d`. `None`
/// for an identifier it does not know or cannot fill (`$SubNumber$`).
fn substitute(template: &str, vars: &Vars, at: Option<Address>) -> Option<String> {
    let mut out = String::with_capacity(template.len() + 16);
    let mut rest = template;
    while let Some(start) = rest.find('$') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        let end = after.find('$')?;
        let ident = &after[..end];
        rest = &after[end + 1..];
        if ident.is_empty() {
            out.push('$');
            continue;
        }
        let (name, width) = match ident.split_once('%') {
            Some((name, format)) => {
                let digits = format.strip_prefix('0')?.strip_suffix('d')?;
                (name, digits.parse::<usize>().ok()?)
            }
            None => (ident, 0),
        };
        let value = match name {
            "RepresentationID" if width == 0 => vars.id.to_string(),
            "Bandwidth" => vars.bandwidth.to_string(),
            "Number" => at?.number.to_string(),
            "Time" => at?.time.to_string(),
            _ => return None,
        };
        for _ in value.len()..width {
            out.push('0');
        }
        out.push_str(&value);
    }
    out.push_str(rest);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn url() -> url::Url {
        url::Url::parse("http://cdn.example/live/main/manifest.mpd").unwrap()
    }

    fn paths(mpd: &Mpd, rep: usize) -> Vec<String> {
        mpd.representations[rep]
            .iter()
            .map(|u| u.path().to_string())
            .collect()
    }

    #[test]
    fn a_timeline_with_number_addressing_lists_each_representations_segments() {
        let text = r#"<?xml version="1.0"?>
<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="dynamic">
  <Period id="1">
    <AdaptationSet mimeType="video/mp4">
      <SegmentTemplate timescale="1000" startNumber="40"
          media="$RepresentationID$/$Number%05d$.m4s" initialization="$RepresentationID$/init.mp4">
        <SegmentTimeline><S t="80000" d="2000" r="2"/></SegmentTimeline>
      </SegmentTemplate>
      <Representation id="720p" bandwidth="3000000"/>
      <Representation id="360p" bandwidth="800000"/>
    </AdaptationSet>
  </Period>
</MPD>"#;
        let mpd = parse(text, &url()).unwrap();
        assert!(mpd.dynamic);
        assert_eq!(
            paths(&mpd, 0),
            [
                "/live/main/720p/init.mp4",
                "/live/main/720p/00040.m4s",
                "/live/main/720p/00041.m4s",
                "/live/main/720p/00042.m4s"
            ]
        );
        assert_eq!(paths(&mpd, 1)[3], "/live/main/360p/00042.m4s");
    }

    #[test]
    fn time_addressing_follows_t_d_and_r_and_base_urls_resolve_per_level() {
        let text = r#"<MPD type="dynamic"><BaseURL>http://other.example/a/</BaseURL>
  <Period><BaseURL>p/</BaseURL>
    <SegmentTemplate media="v-$Time$-$Bandwidth$.m4s"/>
    <AdaptationSet><BaseURL>/abs/</BaseURL>
      <Representation id="r" bandwidth="5">
        <SegmentTemplate><SegmentTimeline>
          <S t="10" d="4"/><S d="5" r="1"/><S t="100" d="1" r="-1"/><S t="102" d="3"/>
        </SegmentTimeline></SegmentTemplate>
      </Representation>
    </AdaptationSet>
  </Period></MPD>"#;
        let mpd = parse(text, &url()).unwrap();
        let all = &mpd.representations[0];
        assert_eq!(all[0].host_str(), Some("other.example"));
        assert_eq!(
            paths(&mpd, 0),
            [
                "/abs/v-10-5.m4s",
                "/abs/v-14-5.m4s",
                "/abs/v-19-5.m4s",
                "/abs/v-100-5.m4s",
                "/abs/v-101-5.m4s",
                "/abs/v-102-5.m4s"
            ]
        );
    }

    #[test]
    fn segment_lists_static_mpds_and_what_is_not_an_mpd() {
        let text = r#"<MPD><Period><AdaptationSet><Representation id="a">
          <SegmentList><Initialization sourceURL="i.mp4"/>
            <SegmentURL media="1.m4s"/><SegmentURL media="2.m4s"/></SegmentList>
        </Representation></AdaptationSet></Period></MPD>"#;
        let mpd = parse(text, &url()).unwrap();
        assert!(!mpd.dynamic, "static is the default");
        assert_eq!(
            paths(&mpd, 0),
            ["/live/main/i.mp4", "/live/main/1.m4s", "/live/main/2.m4s"]
        );
        assert_eq!(parse("#EXTM3U\n", &url()), None);
        assert_eq!(parse("<html><body/></html>", &url()), None);
        assert_eq!(parse("<MPD", &url()), None);
        assert!(looks_like_mpd("\u{feff}  <?xml version='1.0'?><MPD/>"));
        assert!(!looks_like_mpd("#EXTM3U"));
    }

    #[test]
    fn a_duration_template_without_a_timeline_lists_only_its_initialization() {
        let text = r#"<MPD type="dynamic"><Period><AdaptationSet>
          <SegmentTemplate duration="2" media="$Number$.m4s" initialization="init.mp4"/>
          <Representation id="a"/></AdaptationSet></Period></MPD>"#;
        let mpd = parse(text, &url()).unwrap();
        assert_eq!(paths(&mpd, 0), ["/live/main/init.mp4"]);
    }

    #[test]
    fn a_huge_repeat_count_is_read_by_its_last_segments_only() {
        let text = r#"<MPD type="dynamic"><Period><AdaptationSet>
          <SegmentTemplate media="$Number$.m4s"><SegmentTimeline>
            <S t="0" d="1" r="999999999999"/></SegmentTimeline></SegmentTemplate>
          <Representation id="a"/></AdaptationSet></Period></MPD>"#;
        let mpd = parse(text, &url()).unwrap();
        let p = paths(&mpd, 0);
        assert_eq!(p.len(), MAX_PER_REPRESENTATION);
        assert_eq!(p.last().unwrap(), "/live/main/1000000000000.m4s");
    }

    #[test]
    fn templates_substitute_known_identifiers_and_refuse_unknown_ones() {
        let vars = Vars {
            id: "v1",
            bandwidth: "64",
        };
        let at = Some(Address { number: 7, time: 9 });
        assert_eq!(
            substitute(
                "$$a$RepresentationID$/$Number%03d$-$Time$-$Bandwidth%04d$",
                &vars,
                at
            )
            .as_deref(),
            Some("$av1/007-9-0064")
        );
        assert_eq!(substitute("$SubNumber$", &vars, at), None);
        assert_eq!(substitute("$Number", &vars, at), None);
        assert_eq!(substitute("$Number%5d$", &vars, at), None);
        assert_eq!(substitute("$Number$", &vars, None), None);
    }

    proptest! {
        #[test]
        fn no_input_panics(text in ".{0,400}") {
            let _ = parse(&text, &url());
        }

        #[test]
        fn a_timeline_lists_consecutive_numbers_ending_at_its_count(
            runs in proptest::collection::vec((1i64..50, 0i64..20), 1..8),
            start in 0u64..1000,
        ) {
            let s: String = runs.iter().map(|(d, r)| format!(r#"<S d="{d}" r="{r}"/>"#)).collect();
            let text = format!(r#"<MPD type="dynamic"><Period><AdaptationSet>
              <SegmentTemplate startNumber="{start}" media="$Number$"><SegmentTimeline>{s}
              </SegmentTimeline></SegmentTemplate><Representation id="a"/></AdaptationSet></Period></MPD>"#);
            let mpd = parse(&text, &url()).unwrap();
            let numbers: Vec<u64> = paths(&mpd, 0).iter()
                .map(|p| p.rsplit('/').next().unwrap().parse().unwrap()).collect();
            let total: u64 = runs.iter().map(|(_, r)| *r as u64 + 1).sum();
            prop_assert_eq!(numbers.len() as u64, total);
            prop_assert!(numbers.windows(2).all(|w| w[1] == w[0] + 1));
            prop_assert_eq!(numbers[0], start);
        }
    }
}
