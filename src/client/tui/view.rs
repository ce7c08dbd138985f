//! Drawing the [`App`] on a ratatui frame: the chat pane, the side pane,
//! the status bar and the input line, or a message when the terminal is
//! too small.
//!
//! ```text
//! ┌ chat pane ─────────────────────────┬ side pane ┐
//! │12:01 bob: hi alice                 │Rooms      │
//! │12:02 * carol joined #general       │#dev      1│
//! │                                    │#general  3│
//! │                                    │People (3) │
//! ├────────────────────────────────────┴───────────┤
//! │ 127.0.0.1:6622 │ alice │ #general │ connected  │  status bar
//! │> half-typed line                               │  input line
//! ```

use ratatui::Frame;
use ratatui::layout::{Alignment, Position, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph, Wrap};
use unicode_width::UnicodeWidthChar;

use super::app::{App, Entry, Link, SearchPane, room_label};
use super::chat::name_colour;

/// The smallest terminal the client draws in.
pub const MIN_WIDTH: u16 = 40;
/// The smallest terminal the client draws in.
pub const MIN_HEIGHT: u16 = 10;

/// From this width on, the side pane is shown: below it the chat needs
/// every column.
pub const SIDE_PANE_FROM: u16 = 60;

const STATUS_STYLE: Style = Style::new().fg(Color::White).bg(Color::Indexed(236));

/// The side pane's width (its border included) in a terminal `width` wide.
pub fn side_width(width: u16) -> u16 {
    if width < SIDE_PANE_FROM {
        0
    } else {
        (width / 5).clamp(16, 26)
    }
}

/// The chat pane's width in a terminal `width` wide.
pub fn chat_width(width: u16) -> u16 {
    width.saturating_sub(side_width(width))
}

/// The chat pane's height in a terminal `height` high.
pub fn chat_height(height: u16) -> u16 {
    height.saturating_sub(2)
}

/// The search pane's height (its border included) in a terminal `height`
/// high, while it is open: the upper half of the chat area.
pub fn search_height(height: u16) -> u16 {
    chat_height(height) / 2
}

/// The chat pane's height below the search pane, if that is open.
pub fn chat_pane_height(height: u16, search_open: bool) -> u16 {
    if search_open {
        chat_height(height) - search_height(height)
    } else {
        chat_height(height)
    }
}

/// Draws everything.
pub fn draw(frame: &mut Frame<'_>, app: &mut App) {
    let area = frame.area();
    app.size = (area.width, area.height);
    if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
        draw_too_small(frame, area);
        return;
    }
    let chat_w = chat_width(area.width);
    let chat_h = chat_height(area.height);
    let mut chat_area = Rect::new(area.x, area.y, chat_w, chat_h);
    if let Some(pane) = &app.search {
        let search_h = search_height(area.height);
        draw_search(frame, Rect::new(area.x, area.y, chat_w, search_h), pane);
        chat_area = Rect::new(area.x, area.y + search_h, chat_w, chat_h - search_h);
    }
    let side_area = Rect::new(area.x + chat_w, area.y, area.width - chat_w, chat_h);
    let status_area = Rect::new(area.x, area.y + chat_h, area.width, 1);
    let input_area = Rect::new(area.x, area.y + chat_h + 1, area.width, 1);

    let rows = app
        .chat
        .window(usize::from(chat_area.width), usize::from(chat_area.height));
    // Newest at the bottom, as in a conversation.
    let blank = usize::from(chat_area.height).saturating_sub(rows.len());
    let mut lines: Vec<Line<'static>> = vec![Line::raw(""); blank];
    lines.extend(rows);
    frame.render_widget(Paragraph::new(lines), chat_area);

    if side_area.width > 0 {
        draw_side(frame, side_area, app);
    }
    draw_status(frame, status_area, app);
    draw_input(frame, input_area, app);
}

/// The search pane: what was searched, then one row per message found.
fn draw_search(frame: &mut Frame<'_>, area: Rect, pane: &SearchPane) {
    let place = pane
        .room
        .as_deref()
        .map(|r| format!(" in #{r}"))
        .unwrap_or_default();
    let found = if pane.hits.is_empty() {
        "nothing found".to_owned()
    } else {
        format!("{} found", pane.hits.len())
    };
    let title = fit(
        &format!(
            " search \"{}\"{place}: {found} · Esc closes, ^P ^N scroll ",
            pane.query
        ),
        usize::from(area.width),
    );
    let block = Block::new()
        .borders(Borders::BOTTOM)
        .border_style(Style::new().fg(Color::DarkGray))
        .title_bottom(Line::styled(title, Style::new().fg(Color::Yellow)));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let width = usize::from(inner.width);
    let mut lines: Vec<Line<'static>> = Vec::new();
    if let Some(percent) = pane.building {
        lines.push(Line::styled(
            fit(
                &format!("the server's index is {percent}% built: some messages may be missing"),
                width,
            ),
            Style::new().fg(Color::DarkGray),
        ));
    }
    for hit in pane.hits.iter().skip(pane.scroll) {
        let lead = format!("{} {} ", hit.when, hit.place);
        let name = format!("{}: ", hit.from);
        let rest = width.saturating_sub(lead.chars().count() + name.chars().count());
        lines.push(Line::from(vec![
            Span::styled(lead, Style::new().fg(Color::DarkGray)),
            Span::styled(
                name,
                Style::new()
                    .fg(name_colour(&hit.from))
                    .add_modifier(Modifier::BOLD),
            ),
            Span::raw(fit(&hit.text, rest)),
        ]));
    }
    frame.render_widget(Paragraph::new(lines), inner);
}

fn draw_too_small(frame: &mut Frame<'_>, area: Rect) {
    let text = vec![
        Line::styled(
            "terminal too small",
            Style::new().add_modifier(Modifier::BOLD),
        ),
        Line::raw(format!(
            "{}×{}: make it at least {MIN_WIDTH}×{MIN_HEIGHT}",
            area.width, area.height
        )),
    ];
    let top = area.height.saturating_sub(2) / 2;
    let middle = Rect::new(area.x, area.y + top, area.width, area.height - top);
    frame.render_widget(
        Paragraph::new(text)
            .alignment(Alignment::Center)
            .wrap(Wrap { trim: true }),
        middle,
    );
}

/// Cuts `text` to `width` columns, with `…` where it was cut.
fn fit(text: &str, width: usize) -> String {
    let mut out = String::new();
    let mut used = 0;
    let total: usize = text.chars().map(|c| c.width().unwrap_or(0)).sum();
    if total <= width {
        return text.to_owned();
    }
    for c in text.chars() {
        let w = c.width().unwrap_or(0);
        if used + w + 1 > width {
            break;
        }
        out.push(c);
        used += w;
    }
    out.push('…');
    out
}

fn draw_side(frame: &mut Frame<'_>, area: Rect, app: &App) {
    let block = Block::new()
        .borders(Borders::LEFT)
        .border_style(Style::new().fg(Color::DarkGray));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let width = usize::from(inner.width);
    let height = usize::from(inner.height);
    let heading = Style::new().add_modifier(Modifier::BOLD | Modifier::UNDERLINED);
    let mut lines: Vec<Line<'static>> = Vec::new();

    lines.push(Line::styled("Rooms", heading));
    // Rooms take at most half the pane, so that people always show.
    let room_rows = (height / 2).saturating_sub(1).max(1);
    let shown = if app.rooms.len() > room_rows {
        room_rows.saturating_sub(1)
    } else {
        app.rooms.len()
    };
    for (name, count) in app.rooms.iter().take(shown) {
        let count = count.to_string();
        let here = app
            .room
            .as_deref()
            .is_some_and(|r| r.to_lowercase() == name.to_lowercase());
        let label = fit(&format!("#{name}"), width.saturating_sub(count.len() + 1));
        let pad = width.saturating_sub(label.chars().count() + count.len());
        let style = if here {
            Style::new().fg(Color::White).add_modifier(Modifier::BOLD)
        } else {
            Style::new().fg(Color::Gray)
        };
        lines.push(Line::from(vec![
            Span::styled(label, style),
            Span::raw(" ".repeat(pad)),
            Span::styled(count, Style::new().fg(Color::DarkGray)),
        ]));
    }
    if shown < app.rooms.len() {
        lines.push(Line::styled(
            format!("… {} more", app.rooms.len() - shown),
            Style::new().fg(Color::DarkGray),
        ));
    }
    if app.rooms.is_empty() && !app.json() && app.link == Link::Online {
        lines.push(Line::styled(
            fit("(server has no JSON mode)", width),
            Style::new().fg(Color::DarkGray),
        ));
    }
    lines.push(Line::raw(""));

    let title = match &app.room {
        Some(_) => format!("People ({})", app.members.len()),
        None => "People".to_owned(),
    };
    lines.push(Line::styled(fit(&title, width), heading));
    let left = height.saturating_sub(lines.len());
    let shown = if app.members.len() > left {
        left.saturating_sub(1)
    } else {
        app.members.len()
    };
    for name in app.members.iter().take(shown) {
        let me = app.name.as_deref().is_some_and(|n| n == name);
        let mut style = Style::new().fg(name_colour(name));
        if me {
            style = style.add_modifier(Modifier::BOLD);
        }
        lines.push(Line::styled(fit(name, width), style));
    }
    if shown < app.members.len() {
        lines.push(Line::styled(
            format!("… {} more", app.members.len() - shown),
            Style::new().fg(Color::DarkGray),
        ));
    }
    frame.render_widget(Paragraph::new(lines), inner);
}

fn draw_status(frame: &mut Frame<'_>, area: Rect, app: &App) {
    let link_style = match app.link {
        Link::Online => Style::new().fg(Color::LightGreen),
        Link::Connecting | Link::LoggingIn | Link::Leaving { .. } => {
            Style::new().fg(Color::LightYellow)
        }
        Link::Waiting { .. } => Style::new()
            .fg(Color::LightRed)
            .add_modifier(Modifier::BOLD),
    };
    let sep = Span::styled(" │ ", Style::new().fg(Color::DarkGray));
    let name = app
        .name
        .clone()
        .unwrap_or_else(|| "(no name yet)".to_owned());
    let mut left = vec![
        Span::raw(" "),
        Span::raw(app.server.clone()),
        sep.clone(),
        Span::styled(name, Style::new().add_modifier(Modifier::BOLD)),
        sep.clone(),
        Span::raw(room_label(app.room.as_deref())),
        sep,
        Span::styled(app.link_label(), link_style),
    ];
    // On a narrow terminal the server's address goes first: the state of
    // the connection matters more.
    if left.iter().map(Span::width).sum::<usize>() > usize::from(area.width) {
        left.drain(1..3);
    }
    if app.chat.scroll > 0 {
        let more = if app.chat.unseen > 0 {
            format!(" ▼ {} new (End)", app.chat.unseen)
        } else {
            " ▲ scrolled (End)".to_owned()
        };
        let used: usize = left.iter().map(Span::width).sum();
        let pad = usize::from(area.width).saturating_sub(used + more.chars().count());
        left.push(Span::raw(" ".repeat(pad)));
        left.push(Span::styled(
            more,
            Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD),
        ));
    }
    frame.render_widget(Paragraph::new(Line::from(left)).style(STATUS_STYLE), area);
}

fn draw_input(frame: &mut Frame<'_>, area: Rect, app: &App) {
    let (label, editor) = match app.entry {
        Entry::Chat => (app.prompt_label(), &app.input),
        Entry::Name | Entry::Password => (app.prompt_label(), &app.login),
    };
    let masked = app.entry == Entry::Password;
    let chars: Vec<char> = if masked {
        vec!['*'; editor.chars().len()]
    } else {
        editor.chars().to_vec()
    };
    let label_w = label.chars().count();
    let room = usize::from(area.width).saturating_sub(label_w + 1).max(1);
    let cursor = editor.cursor();
    // Scroll the line sideways so that the cursor is always in sight.
    let widths: Vec<usize> = chars.iter().map(|c| c.width().unwrap_or(0)).collect();
    let mut start = 0;
    while widths[start..cursor].iter().sum::<usize>() > room {
        start += 1;
    }
    let mut end = start;
    let mut used = 0;
    while end < chars.len() && used + widths[end] <= room {
        used += widths[end];
        end += 1;
    }
    let text: String = chars[start..end].iter().collect();
    let label_style = match app.entry {
        Entry::Chat => Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD),
        _ => Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD),
    };
    frame.render_widget(
        Paragraph::new(Line::from(vec![
            Span::styled(label, label_style),
            Span::raw(text),
        ])),
        area,
    );
    let before: usize = widths[start..cursor].iter().sum();
    let x = u16::try_from(label_w + before).unwrap_or(u16::MAX);
    frame.set_cursor_position(Position::new(
        area.x + x.min(area.width.saturating_sub(1)),
        area.y,
    ));
}
