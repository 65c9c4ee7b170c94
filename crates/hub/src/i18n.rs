//! The dashboard's words in Vietnamese and English, and which language a
//! request gets: `?lang=vi|en` when given (the page's toggle, which the hub
//! keeps in a `truc-lang` cookie), otherwise the kept choice, otherwise the
//! browser's `Accept-Language`, whichever of the two it ranks higher;
//! English when it names neither.

use serde_json::{Map, Value};

/// A language of the dashboard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Lang {
    Vi,
    En,
}

impl Lang {
    /// The BCP 47 tag.
    pub(crate) fn tag(self) -> &'static str {
        match self {
            Lang::Vi => "vi",
            Lang::En => "en",
        }
    }

    fn of_tag(tag: &str) -> Option<Lang> {
        let primary = tag.trim().split(['-', '_']).next()?;
        if primary.eq_ignore_ascii_case("vi") {
            Some(Lang::Vi)
        } else if primary.eq_ignore_ascii_case("en") {
            Some(Lang::En)
        } else {
            None
        }
    }
}

/// How the language was chosen: the page tells the browser, which may then
/// prefer `navigator.languages` when the request named no language.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    /// `?lang=`.
    Query,
    /// The `truc-lang` cookie: a choice made earlier with `?lang=`.
    Cookie,
    /// `Accept-Language` named vi or en.
    Header,
    /// Neither: English.
    Default,
}

impl Source {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Source::Query => "query",
            Source::Cookie => "cookie",
            Source::Header => "header",
            Source::Default => "default",
        }
    }
}

/// The name of the cookie that keeps a choice made with `?lang=`.
pub(crate) const COOKIE: &str = "truc-lang";

/// The language of a request with this query string, `Cookie` header and
/// `Accept-Language`.
pub(crate) fn choose(
    query: Option<&str>,
    cookie: Option<&str>,
    accept_language: Option<&str>,
) -> (Lang, Source) {
    let asked = query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .filter_map(|pair| pair.strip_prefix("lang="))
        .find_map(Lang::of_tag);
    if let Some(lang) = asked {
        return (lang, Source::Query);
    }
    let kept = cookie
        .into_iter()
        .flat_map(|c| c.split(';').take(50))
        .filter_map(|pair| pair.trim().strip_prefix(COOKIE)?.strip_prefix('='))
        .find_map(Lang::of_tag);
    if let Some(lang) = kept {
        return (lang, Source::Cookie);
    }
    // The highest-ranked of vi and en; the first one on a tie. A header
    // is short: bound what is read of a hostile one.
    let mut best: Option<(Lang, f32)> = None;
    for item in accept_language.unwrap_or("").split(',').take(50) {
        let mut parts = item.split(';');
        let Some(lang) = parts.next().and_then(Lang::of_tag) else {
            continue;
        };
        let q = parts
            .find_map(|p| p.trim().strip_prefix("q="))
            .map_or(Some(1.0), |v| v.trim().parse::<f32>().ok())
            .filter(|q| q.is_finite() && *q > 0.0);
        if let Some(q) = q
            && best.is_none_or(|(_, b)| q > b)
        {
            best = Some((lang, q));
        }
    }
    best.map_or((Lang::En, Source::Default), |(l, _)| (l, Source::Header))
}

/// Every text of the page: key, English, Vietnamese.
const TEXTS: &[(&str, &str, &str)] = &[
    (
        "title",
        "truc — hub dashboard",
        "truc — bảng điều khiển trục",
    ),
    (
        "heading",
        "truc — transactions through the hub",
        "truc — giao dịch qua trục",
    ),
    ("time_zone", "time zone", "múi giờ"),
    ("last_refresh", "last refresh", "cập nhật lúc"),
    ("never", "never", "chưa"),
    ("today", "Today", "Hôm nay"),
    ("this_month", "This month", "Tháng này"),
    ("this_year", "This year", "Năm nay"),
    ("errors", "errors", "lỗi"),
    (
        "quota_refused",
        "of them refused over quota",
        "trong đó bị từ chối do vượt hạn mức",
    ),
    ("error_rate", "Error rate (30 days)", "Tỷ lệ lỗi (30 ngày)"),
    ("p50_today", "p50 today", "p50 hôm nay"),
    (
        "per_day",
        "Transactions per day (last 30 days with traffic)",
        "Giao dịch mỗi ngày (30 ngày gần nhất có giao dịch)",
    ),
    ("by_kind", "By kind", "Theo loại"),
    ("kind", "Kind", "Loại"),
    ("count", "Count", "Số lượng"),
    ("share", "Share", "Tỷ lệ"),
    (
        "top_agencies",
        "Top agencies",
        "Cơ quan có nhiều giao dịch nhất",
    ),
    ("agency", "Agency", "Cơ quan"),
    ("transactions_h", "Transactions", "Giao dịch"),
    (
        "top_services",
        "Top services",
        "Dịch vụ được dùng nhiều nhất",
    ),
    ("service", "Service", "Dịch vụ"),
    (
        "replicas_h",
        "Hub replicas today",
        "Các bản sao của trục hôm nay",
    ),
    ("replica", "Replica", "Bản sao"),
    ("this_replica", "this replica", "bản sao này"),
    ("log_origin", "Log", "Nhật ký"),
    ("errors_h", "Errors", "Lỗi"),
    ("quota_h", "Over quota", "Vượt hạn mức"),
    ("state", "State", "Trạng thái"),
    ("up", "up", "hoạt động"),
    ("unreachable", "unreachable", "không liên lạc được"),
    ("replicas_up", "{0} answering", "{0} trả lời"),
    ("total_all", "Deployment total", "Tổng toàn hệ thống"),
    (
        "total_partial",
        "Total of {0} replicas only",
        "Tổng chỉ của {0} bản sao",
    ),
    ("partial", "partial", "chưa đầy đủ"),
    ("live_feed", "Live feed", "Giao dịch trực tiếp"),
    (
        "feed_down",
        "live feed disconnected, retrying",
        "mất kết nối luồng trực tiếp, đang thử lại",
    ),
    ("time", "Time", "Thời gian"),
    (
        "client_provider",
        "Client → provider",
        "Bên gọi → bên cung cấp",
    ),
    ("outcome", "Outcome", "Kết quả"),
    ("latency", "Latency", "Độ trễ"),
    ("language", "Language", "Ngôn ngữ"),
    (
        "no_traffic",
        "No traffic in the last 30 days.",
        "Không có giao dịch trong 30 ngày qua.",
    ),
    ("transactions", "transactions", "giao dịch"),
    ("chart_label", "transactions per day", "giao dịch mỗi ngày"),
    ("no_transactions", "No transactions.", "Không có giao dịch."),
    ("no_agencies", "No agencies yet.", "Chưa có cơ quan nào."),
    ("no_services", "No services yet.", "Chưa có dịch vụ nào."),
    ("no_feed", "No transactions yet.", "Chưa có giao dịch nào."),
    (
        "unreadable",
        "{0} stored statistics entries could not be read and are not counted (see the hub's log)",
        "{0} mục thống kê đã lưu không đọc được và không được tính (xem nhật ký của trục)",
    ),
    (
        "refresh_failed",
        "summary refresh failed ({0}), retrying",
        "không cập nhật được số liệu ({0}), đang thử lại",
    ),
    (
        "unsupported",
        "live feed unsupported",
        "trình duyệt không hỗ trợ luồng trực tiếp",
    ),
    ("kind_call", "call", "gọi dịch vụ"),
    ("kind_document", "document", "văn bản"),
    ("kind_status", "status", "trạng thái"),
    ("transaction", "transaction", "giao dịch"),
];

fn text(lang: Lang, en: &'static str, vi: &'static str) -> &'static str {
    match lang {
        Lang::Vi => vi,
        Lang::En => en,
    }
}

/// The texts of `lang` by key, for the page's script.
fn dictionary(lang: Lang) -> Value {
    let map: Map<String, Value> = TEXTS
        .iter()
        .map(|(k, en, vi)| ((*k).to_string(), Value::from(text(lang, en, vi))))
        .collect();
    Value::Object(map)
}

/// `template` in `lang`: each `{{key}}` replaced by its text (the texts
/// are ours and hold no markup), `{{lang}}` and `{{lang_source}}` by the
/// choice, and `/*I18N*/null` in the script by the dictionary.
pub(crate) fn render(template: &str, lang: Lang, source: Source) -> String {
    let mut page = template
        .replace("{{lang}}", lang.tag())
        .replace("{{lang_source}}", source.as_str());
    for (k, en, vi) in TEXTS {
        page = page.replace(&format!("{{{{{k}}}}}"), text(lang, en, vi));
    }
    // No text holds `</`, but a script block must never see one.
    let json = dictionary(lang).to_string().replace("</", "<\\/");
    page.replace("/*I18N*/null", &json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_language_follows_the_toggle_then_the_browser() {
        assert_eq!(choose(None, None, None), (Lang::En, Source::Default));
        assert_eq!(choose(None, None, Some("vi-VN,vi;q=0.9")).0, Lang::Vi);
        assert_eq!(
            choose(None, None, Some("en-US,en;q=0.9,vi;q=0.8")).0,
            Lang::En
        );
        assert_eq!(
            choose(None, None, Some("fr-FR, vi;q=0.5, en;q=0.4")).0,
            Lang::Vi
        );
        assert_eq!(
            choose(None, None, Some("fr, de")),
            (Lang::En, Source::Default),
            "neither: English"
        );
        assert_eq!(choose(None, None, Some("vi;q=0, en;q=0.1")).0, Lang::En);
        assert_eq!(choose(None, None, Some("vi;q=abc")).1, Source::Default);
        assert_eq!(
            choose(Some("x=1&lang=en"), None, Some("vi")),
            (Lang::En, Source::Query)
        );
        assert_eq!(choose(Some("lang=vi"), None, Some("en")).0, Lang::Vi);
        assert_eq!(choose(Some("lang=xx"), None, Some("vi")).1, Source::Header);
    }

    #[test]
    fn a_kept_choice_comes_after_the_toggle_and_before_the_browser() {
        let kept = Some("theme=dark; truc-lang=vi");
        assert_eq!(choose(None, kept, Some("en")), (Lang::Vi, Source::Cookie));
        assert_eq!(
            choose(Some("lang=en"), kept, Some("vi")),
            (Lang::En, Source::Query)
        );
        // A value it does not know, or a cookie of a similar name, is ignored.
        assert_eq!(
            choose(None, Some("truc-lang=xx"), Some("vi")).1,
            Source::Header
        );
        assert_eq!(choose(None, Some("xtruc-lang=vi"), None).1, Source::Default);
        assert_eq!(
            choose(None, Some("truc-language=vi"), None).1,
            Source::Default
        );
    }

    #[test]
    fn every_placeholder_of_the_page_has_a_text_in_both_languages() {
        let page = include_str!("dashboard.html");
        for lang in [Lang::Vi, Lang::En] {
            let out = render(page, lang, Source::Default);
            assert!(!out.contains("{{"), "a placeholder without a text");
            assert!(!out.contains("/*I18N*/"));
            assert!(out.contains(&format!("<html lang=\"{}\"", lang.tag())));
        }
        let vi = render(page, Lang::Vi, Source::Header);
        assert!(vi.contains("<h2>Hôm nay ") && !vi.contains("<h2>Today "));
        let en = render(page, Lang::En, Source::Header);
        assert!(en.contains("<h2>Today ") && !en.contains("Hôm nay"));
        for (k, en, vi) in TEXTS {
            assert!(!en.is_empty() && !vi.is_empty(), "{k}");
            assert!(!en.contains('<') && !vi.contains('<'), "{k}");
        }
        // Every text the script asks for exists.
        let asked: Vec<&str> = page
            .split("tr(\"")
            .skip(1)
            .filter_map(|rest| rest.split('"').next())
            .collect();
        assert!(asked.len() > 10, "{asked:?}");
        for k in asked {
            assert!(TEXTS.iter().any(|(key, _, _)| *key == k), "no text {k:?}");
        }
    }
}
