"""``grader serve``: a local web app over a class's gradebook, for a TA (or a small team) reviewing it.

Pages: the class (a sortable, searchable table and each task's distribution), the review queue
(``api.review_gradebook``) with what the last batch changed ("was X, now Y", a student's total and each task:
``batch_change``), and each student's page: what the queue lists of theirs, the tasks with their evidence and a
folded override form (an undo beside one in force), the files and what each became, the work as it ran
(``grader.executed``) and the feedback page the student gets.  Previous and next follow the class table's order
and search.  An override or undo goes through ``api.override_score`` (the gradebook's audit trail, the pages and
exports re-drawn) with the version of the task the form was drawn from: a task changed since is refused, and the
TA told by whom; a refused form comes back with what the TA typed in it (bounded, escaped).  Every request needs
the token the command prints (in the URL once, then a cookie); every form a CSRF token; every page is escaped
(Jinja autoescape, ``textsafe.visible``) under a Content-Security-Policy.  Flask on Werkzeug's threaded server,
bound to 127.0.0.1 by default (docs/design/serve.md).
"""
from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
import threading
from collections import OrderedDict
from pathlib import Path
from urllib.parse import urlencode

from flask import (Flask, abort, current_app, flash, g, get_flashed_messages, redirect, render_template, request,
                   url_for)
from markupsafe import Markup
from werkzeug.exceptions import HTTPException

from ..errors import FatalError, GradebookError
from ..textsafe import visible

#: the query parameter and the cookie that carry the token
TOKEN_PARAM = "token"
#: the largest form accepted (an override's reason is a few lines)
MAX_FORM_BYTES = 64 * 1024
#: the largest static page served (a student's feedback page with its plots)
MAX_PAGE_BYTES = 32 << 20
#: how long an override waits for another writer of the same output folder (a batch, another TA's override)
OVERRIDE_WAIT_S = 60.0
CHANGED_SINCE = "Another TA changed this task since you opened the page"
#: the longest name kept in "By" (and in the cookie that remembers the one a TA typed)
MAX_BY_CHARS = 128
#: a refused form comes back with what the TA typed (``_say``): the points' text cut at this many characters,
#: the reason at ``grader.ci.inputs.MAX_REASON``, the name at ``MAX_BY_CHARS``; kept in the server (a cookie holds
#: 4 KB) until its page is drawn, at most this many forms at once (the oldest dropped)
MAX_POINTS_CHARS = 32
MAX_KEPT_FORMS = 64


def _finalize(value):
    if isinstance(value, Markup):
        return value
    return visible(value) if isinstance(value, str) else value


def create_app(out_dir: Path, *, db_url: str | None = None, assignment_id: str | None = None,
               assignment_dir: Path | None = None, token: str | None = None, host: str = "127.0.0.1",
               by: str | None = None) -> Flask:
    """The app over the gradebook ``grader export`` would find from ``out_dir`` / ``db_url``.  ``token``: the
    secret every request must carry (a new random one when None; ``app.config["GRADER_TOKEN"]``).  ``host``: the
    address it listens on; a request naming another host is refused (``allowed_hosts``).  ``by``: who the
    override forms name until the TA types another name (default: the OS user, as ``grader override``)."""
    from ..api import _assignment_for_pages, open_gradebook
    from ..store import Gradebook

    with open_gradebook(out_dir, db_url=db_url, assignment_id=assignment_id) as (gradebook, assignment_id, folder):
        pages, _, _ = _assignment_for_pages(gradebook, assignment_id, folder, None)
    app = Flask(__name__)
    app.jinja_env.finalize = _finalize
    app.jinja_env.trim_blocks = app.jinja_env.lstrip_blocks = True
    token = token or secrets.token_urlsafe(32)
    app.secret_key = secrets.token_bytes(32)  # signs the flashed messages' cookie
    app.config.update(GRADER_TOKEN=token, SESSION_COOKIE_SAMESITE="Strict", SESSION_COOKIE_HTTPONLY=True,
                      SESSION_COOKIE_NAME=f"grader_session_{_digest(token, 'cookie')[:10]}",
                      MAX_CONTENT_LENGTH=MAX_FORM_BYTES)
    app.extensions["grader"] = {
        "gradebook": Gradebook(db_url, folder), "assignment": assignment_id, "folder": folder, "pages": pages,
        "db_url": db_url, "assignment_dir": assignment_dir, "lock": threading.Lock(), "token": token,
        "hosts": allowed_hosts(host), "by": (by or "").strip()[:MAX_BY_CHARS] or _os_user(),
        # each server's cookies are its own (cookies ignore ports: two servers on one machine share them)
        "cookie": f"grader_token_{_digest(token, 'cookie')[:10]}", "csrf": _digest(token, "csrf"),
        "by_cookie": f"grader_by_{_digest(token, 'cookie')[:10]}",
        "typed": OrderedDict(), "typed_lock": threading.Lock(),
        "css": (Path(__file__).parent / "templates" / "serve.css").read_text(encoding="utf-8")}
    app.before_request(_authorise)
    app.after_request(_headers)
    app.register_error_handler(403, _forbidden)
    app.register_error_handler(HTTPException, _error_page)  # any other a request meets (400, 405, 413, ...)
    app.register_error_handler(500, _error_page)
    app.register_error_handler(GradebookError, _gradebook_error)
    app.context_processor(_common)
    app.add_url_rule("/", "index", index)
    app.add_url_rule("/review", "review", review)
    app.add_url_rule("/student/<name>", "student", student)
    app.add_url_rule("/student/<name>/override", "override", override, methods=["POST"])
    # the .html rule first, so that url_for builds it: /report/alice.html.html is "alice.html"'s page (the rule
    # without .html, first, built /report/alice.html for it, which this rule reads as alice's)
    app.add_url_rule("/report/<name>.html", "report", report)
    app.add_url_rule("/report/<name>", "report", report)
    app.add_url_rule("/report/work/<name>.html", "report_work", report, defaults={"work": True})
    return app


def _state() -> dict:
    return current_app.extensions["grader"]


def _authorise():
    """Before every request: the token (in the URL once, then the cookie), and a POST's CSRF token and origin."""
    state = _state()
    token, cookie = state["token"], state["cookie"]
    g.nonce = secrets.token_urlsafe(16)
    if state["hosts"] is not None and _hostname(request.host) not in state["hosts"]:
        # DNS rebinding: a site whose name now resolves to this machine reaches the server under its own name
        abort(403, f"This server answers to {', '.join(sorted(state['hosts']))} only (grader serve --host).")
    given = request.args.get(TOKEN_PARAM)
    if given is not None and hmac.compare_digest(given.encode(), token.encode()):
        # the token leaves the URL (history, the next page's referrer) for an HttpOnly cookie; the rest of the
        # query stays as given, never as url_for's own arguments (?_external=1&_scheme= made another URL of it)
        rest = urlencode([(k, v) for k, v in request.args.items(multi=True) if k != TOKEN_PARAM])
        page = url_for(request.endpoint, **(request.view_args or {})) if request.endpoint else "/"
        response = redirect(page + (f"?{rest}" if rest else ""), code=303)
        response.set_cookie(cookie, token, httponly=True, samesite="Strict")
        return response
    held = request.cookies.get(cookie, "")
    if not hmac.compare_digest(held.encode(), token.encode()):
        abort(403, "This page needs the token `grader serve` printed: open the URL it printed.")
    if request.method == "POST":
        sent = request.form.get("csrf", "")
        if not hmac.compare_digest(sent.encode(), state["csrf"].encode()):
            abort(403, "The form's CSRF token is missing or wrong: reload the page and try again.")
        origin = request.headers.get("Origin")
        if origin and origin != request.host_url.rstrip("/"):
            abort(403, "The form came from another site.")
    return None


def _headers(response):
    nonce = getattr(g, "nonce", "")
    response.headers.setdefault(
        "Content-Security-Policy",
        f"default-src 'none'; style-src 'nonce-{nonce}'; script-src 'nonce-{nonce}'; img-src data:; "
        "frame-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'self'")
    # same-origin: the browser still sends Origin with a form (no-referrer makes it "null"), never to a site
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "SAMEORIGIN"  # frame-ancestors' older form
    response.headers["Cache-Control"] = "no-store"
    return response


#: the names a browser on this machine reaches a server bound to a loopback address by
LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})


def allowed_hosts(host: str) -> frozenset[str] | None:
    """The host names a request may carry to a server bound to ``host``: the loopback names and ``host`` itself;
    None (any) for every address (``0.0.0.0``, ``::``), where a team reaches it by its own names."""
    bound = _hostname(host)
    return None if bound in ("", "0.0.0.0", "::") else LOOPBACK | {bound}


def _hostname(host: str) -> str:
    """The name in a Host header (``[::1]:8765`` -> ``::1``, ``LocalHost.:80`` -> ``localhost``)."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host
    return (host.rsplit(":", 1)[0] if host.count(":") == 1 else host).rstrip(".")


def _forbidden(e):
    """A refused request, on a page of the app that names nothing of the class (the asker may be no TA: a
    page of another site, a name that resolves here) and links the class only for a TA signed in (a stale
    form: the server was restarted since)."""
    state = _state()
    held = request.cookies.get(state["cookie"], "")
    signed_in = hmac.compare_digest(held.encode(), state["token"].encode()) and \
        (state["hosts"] is None or _hostname(request.host) in state["hosts"])
    return render_template("error.html", code=403, title="Forbidden", text=e.description, nav=signed_in), 403


#: what a TA is told, in the app's own page, for each error a request can meet (never a traceback: that is in
#: the server's log, where Flask writes it)
ERRORS = {
    404: ("Not found", "No such page in this class: the link is from another server or an older class, or the "
                       "student is no longer in the gradebook."),
    405: ("Not a page", "This address takes a form, not a visit: go back to the student's page."),
    413: ("Too long", f"The form was longer than {MAX_FORM_BYTES // 1024} KB: nothing was changed; shorten the "
                      "reason and send it again."),
    500: ("Something went wrong in the grader", "An internal error (a bug in the grader: its traceback is in the "
                                                "terminal running `grader serve`). Reload the page to see the "
                                                "class as it stands."),
}


def _error_page(e):
    code = getattr(e, "code", 500) or 500
    if code in ERRORS:
        title, text = ERRORS[code]
    elif isinstance(e, HTTPException) and code < 500:  # Werkzeug's own words for the rest of a request's errors
        title, text = e.name, e.description or ""
    else:
        code, (title, text) = 500, ERRORS[500]
    return render_template("error.html", code=code, title=title, text=text), code


def _gradebook_error(e: GradebookError):
    """The gradebook could not be read (moved, replaced, locked past its wait): the TA's error, told as the
    CLI tells it, on a page of the app (no traceback: this is no bug)."""
    current_app.logger.error("%s: %s", request.path, e.explain())
    return render_template("error.html", code=503, title="The gradebook could not be read",
                           text=e.explain() + " Reload the page once it is back."), 503


def _common():
    state = _state()
    from ..report import STATUSES as MARKS

    return {"csrf": state["csrf"], "nonce": getattr(g, "nonce", ""), "css": state["css"], "marks": MARKS,
            "assignment": state["assignment"], "messages": _messages()}


def _messages() -> list[dict]:
    """The flashed messages, each ``{"category", "text", "task", "form"}``: the student's page shows a task's in
    that task's section, where the redirect after the form lands, and the others at the top; ``form``: what the
    TA typed in a refused form (``{"action", "points", "reason", "by"}``, taken from the server once), or None."""
    out = []
    state = _state()
    for category, message in get_flashed_messages(with_categories=True):
        message = message if isinstance(message, dict) else {"text": str(message)}
        with state["typed_lock"]:
            form = state["typed"].pop(message.get("form"), None) if message.get("form") else None
        out.append({"category": category, "text": message.get("text", ""), "task": message.get("task"),
                    "form": form})
    return out


def _results() -> dict[str, dict]:
    state = _state()
    return {r["id"]: r for r in state["gradebook"].results(state["assignment"])}


def _student_or_404(name: str) -> dict:
    from ..report import safe_name

    found = next((r for sid, r in _results().items() if safe_name(sid) == name), None)
    if found is None:
        abort(404)
    return found


def index():
    """The class: a row per student (searchable with ?q= too), each task's distribution."""
    from ..report import safe_name

    state = _state()
    tasks = state["gradebook"].tasks(state["assignment"])
    rows = list(_results().values())
    order, query = _order(rows), _query()
    # every row, those the search leaves out hidden (as the page's script hides them): a search cleared or
    # changed in the box shows the class again without a reload
    ordered, shown = _ordered(rows, order), {r["id"] for r in _shown(rows, order, query)}
    titles = {t["id"]: t.get("title", "") for t in tasks}
    # the columns of every row (the results' own order), also when the search leaves none
    columns = [(t["id"], titles.get(t["id"], "")) for t in rows[0]["tasks"]] if rows else list(titles.items())
    return render_template("class.html", tasks=tasks, columns=columns, rows=ordered, shown=shown, total=len(rows),
                           query=query,
                           graded=any(r.get("grade") for r in rows), order=order, order_args=_order_args(order, query),
                           link={r["id"]: safe_name(r["id"]) for r in rows},
                           place={r["id"]: n for n, r in enumerate(rows)},
                           distributions=_distributions(tasks, rows), summary=_summary(rows))


def _summary(rows: list[dict]) -> dict | None:
    """The class in one line: the mean and median total, how many reach half the points, the TA's scores."""
    if not rows:
        return None
    import statistics

    totals = [float(r["score"]) for r in rows]
    return {"mean": statistics.fmean(totals), "median": statistics.median(totals), "n": len(rows),
            "max": max(float(r["max_score"]) for r in rows),
            "half": sum(r["score"] >= r["max_score"] / 2 for r in rows),
            "overridden": sum(bool(t.get("override")) for r in rows for t in r["tasks"])}


#: the class table's columns a TA sorts by besides the tasks' (their ids): ?sort=total&order=asc
SORT_KEYS = ("student", "total", "grade")


def _order(rows: list[dict]) -> tuple[str, bool] | None:
    """The class table's order a request names (``?sort=total&order=desc``): (column, descending), or None for
    the gradebook's own (by student id): a column that is not one of ``SORT_KEYS`` nor a task of ``rows`` (a
    link's own text is never shown as the order)."""
    key = request.args.get("sort", "")
    if key not in SORT_KEYS and not any(t["id"] == key for r in rows[:1] for t in r["tasks"]):
        return None
    return key, request.args.get("order") == "desc"


def _order_args(order: tuple[str, bool] | None, query: str = "") -> dict:
    """``url_for``'s arguments that keep ``order`` and the search ``query`` in a link (a student's page, its
    previous and next)."""
    args = {} if order is None else {"sort": order[0], "order": "desc" if order[1] else "asc"}
    return args | {"q": query} if query else args


#: the longest search kept (in the box, in every link)
MAX_QUERY_CHARS = 200


def _query() -> str:
    """What the class table is searched for (``?q=``: part of a student id, any case)."""
    return request.args.get("q", "").strip()[:MAX_QUERY_CHARS]


def _shown(rows: list[dict], order: tuple[str, bool] | None, query: str) -> list[dict]:
    """The class table's rows as the TA sees them: in ``order``, those whose id contains ``query`` (any case), as
    the page's script filters them; a student's previous and next are among these only."""
    rows = _ordered(rows, order)
    return [r for r in rows if query.lower() in r["id"].lower()] if query else rows


def _ordered(rows: list[dict], order: tuple[str, bool] | None) -> list[dict]:
    """``rows`` in ``order``, as the class table's script sorts them (numbers as numbers, text case-blind; ties
    in the gradebook's order), so that a student's previous and next are the table's rows above and below."""
    if order is None:
        return list(rows)
    key, descending = order

    def value(r):
        if key == "student":
            return r["id"].lower()
        if key == "total":
            return float(r["score"])
        if key == "grade":
            return (r.get("grade") or "").lower()
        score = next((t["score"] for t in r["tasks"] if t["id"] == key), None)
        return float("-inf") if score is None else float(score)

    # Python's sort is stable, reversed too: ties keep the gradebook's order, as the script's sort keeps them
    return sorted(rows, key=value, reverse=descending)


def review():
    """What ``grader review`` lists, each student a link."""
    from ..api import review_gradebook
    from ..report import safe_name

    state = _state()
    found = review_gradebook(state["folder"], db_url=state["db_url"], assignment_id=state["assignment"])
    # what the last `grader grade` changed: the students it graded or re-scored (new or changed work, a new
    # grader or spec); the others kept their earlier result.  Each with the total and the TA's scores flagged
    batch = state["gradebook"].last_batch(state["assignment"])
    changed = []
    if batch is not None:
        results = state["gradebook"].results(state["assignment"], batch["students"])
        changed = [batch_change(r, batch["previous"].get(r["id"])) for r in results]
    return render_template("review.html", found=found, safe_name=safe_name, batch=batch, changed=changed,
                           total=len(state["gradebook"].results(state["assignment"])))


def _own(score: float, automatic: float | None) -> float:
    """The grader's own score: ``automatic`` under a TA's score, else ``score``."""
    return score if automatic is None else automatic


def batch_change(result: dict, previous: dict | None) -> dict:
    """What the last batch changed of a student (``result``: theirs now; ``previous``: what they had before it,
    ``Gradebook.last_batch``): ``{"id", "score", "max_score", "automatic", "flagged", "was", "tasks"}``, ``was``
    "new" (first graded), "unknown" (graded before previous scores were kept) or ``{"score", "automatic"}``;
    ``tasks`` (with a previous result) each task now and each one dropped since: ``{"id", "now", "was",
    "automatic_now", "automatic_was", "moved"}``, ``was`` None for a task new to it, ``now`` None for one dropped,
    ``automatic_*`` the grader's own under a TA's score (None without one), ``moved`` whether either moved."""
    from ..store.gradebook import automatic_score as own

    out = {"id": result["id"], "score": result["score"], "max_score": result["max_score"],
           "automatic": own(result),
           "flagged": [t["id"] for t in result["tasks"] if (t.get("override") or {}).get("needs_review")],
           "tasks": []}
    if previous is None or previous.get("new"):
        out["was"] = "unknown" if previous is None else "new"
        return out
    out["was"] = {"score": previous["score"], "automatic": previous.get("automatic")}
    before = dict(previous.get("tasks") or {})
    for t in result["tasks"]:
        old = before.pop(t["id"], None) or {"score": None, "automatic": None}
        out["tasks"].append({"id": t["id"], "now": t["score"], "automatic_now": own(t.get("override")),
                             "was": old["score"], "automatic_was": old["automatic"]})
    out["tasks"] += [{"id": tid, "now": None, "was": old["score"], "automatic_now": None,
                      "automatic_was": old["automatic"]} for tid, old in before.items()]
    for t in out["tasks"]:
        # a move of the score, or of the grader's own under a TA's (the score itself when there is none)
        t["moved"] = None in (t["now"], t["was"]) or t["now"] != t["was"] or \
            _own(t["now"], t["automatic_now"]) != _own(t["was"], t["automatic_was"])
    return out


def student(name):
    """A student's page: the tasks with their override forms, the files, the work as it ran, the feedback page."""
    from ..executed import models_by_cell

    from ..report import safe_name

    state = _state()
    data = _student_or_404(name)
    gradebook = state["gradebook"]
    # the students before and after, in the class table's order as the TA sorted it (lowest totals first, say):
    # a TA goes through the class without it
    everyone = gradebook.results(state["assignment"])
    order, query = _order(everyone), _query()
    ids = [r["id"] for r in _shown(everyone, order, query)]
    if data["id"] not in ids:  # a student the search leaves out (reached by a link): among the whole class
        query, ids = "", [r["id"] for r in _ordered(everyone, order)]
    at = ids.index(data["id"]) if data["id"] in ids else -1
    step = {"prev": ids[at - 1] if at > 0 else None, "next": ids[at + 1] if 0 <= at < len(ids) - 1 else None,
            "args": _order_args(order, query), "at": at + 1, "of": len(ids), "query": query}
    versions = {t["id"]: gradebook.task_version(state["assignment"], data["id"], t["id"]) for t in data["tasks"]}
    measured = gradebook.current_measurements(state["assignment"], data["id"]) or {}
    executed = measured.get("executed") or []
    models = models_by_cell(data.get("files"))
    # each notebook's place on the page, and the cell (as it ran) that made each task's model: a TA defending a
    # task's mark goes from its message to the code that trained it in one click
    ran = {}
    for n, nb in enumerate(executed):
        ran.setdefault(nb.get("name"), n)
    shown = {(nb.get("name"), c.get("index")) for nb in executed for c in nb.get("cells") or []}
    cells = {m["task"]: f"nb{ran[nb]}-cell-{cell}" for (nb, cell), made in models.items() for m in made
             if m.get("task") and (nb, cell) in shown}
    # a task nothing was handed in for gets an override form only when some of the student's work was left
    # ungraded (``LOOSE``): there is then something a TA can score as that task; files that all became other
    # tasks (or their helpers) leave nothing to score
    loose = any(f.get("outcome") in LOOSE and not f.get("task") for f in data.get("files") or []) or \
        bool(data.get("notebooks"))
    from ..review import review_items

    # what of this student's the review queue lists (identical work aside: that compares the whole class), at the
    # top of the page: a TA walking the class by previous and next sees why this one needs a look
    attention = review_items([data], [])
    # what the last batch changed of theirs, when it graded them: was X, now Y, the total and each task
    batch = gradebook.last_batch(state["assignment"])
    change = batch_change(data, batch["previous"].get(data["id"])) \
        if batch is not None and data["id"] in batch["previous"] else None
    return render_template("student.html", s=data, name=name, versions=versions, step=step, safe_name=safe_name,
                           attention=attention, batch=batch, change=change,
                           moved={t["id"]: t for t in (change or {}).get("tasks", [])},
                           executed=executed, models=models, ran=ran, cells=cells, loose=loose,
                           evidence={t["id"]: _evidence(t) for t in data["tasks"]},
                           report=_page_file(state["pages"], name) is not None,
                           by=request.cookies.get(state["by_cookie"]) or state["by"])


def _evidence(task: dict) -> list[str]:
    """What a task's grade stands on, in short phrases a TA defends it with: the measured value of the metric
    its thresholds judge, the thresholds and where they come from, and the grader's re-training of the recipe
    (its best, of how many); nothing for a task with no threshold (a missing one, a hand-set model's)."""
    from ..assess import METRIC_LABELS, fmt_value
    from ..spec.model import METRICS, relation

    th, metrics = task.get("threshold") or {}, task.get("metrics") or {}
    metric = th.get("metric")
    if metric not in METRICS or metric not in metrics:
        return []
    out = [f"{METRIC_LABELS.get(metric, metric)}: {fmt_value(metric, metrics[metric])}"]
    limits = [f"{which} {relation(metric)} {fmt_value(metric, th[which])}" for which in ("pass", "partial")
              if isinstance(th.get(which), (int, float))]
    if limits:
        out.append("thresholds: " + ", ".join(limits) + (f" (from {th['source']})" if th.get("source") else ""))
    best, runs = metrics.get(f"retrained_{metric}"), metrics.get("retrainings")
    if best is not None:
        out.append(f"the grader's re-training of the recipe: best {fmt_value(metric, best)}"
                   + (f" of {runs:g} run(s)" if runs else ""))
    return out


#: what became of a file (``FileResult.outcome``) that leaves work a TA may score as a task the grader gave
#: nothing for, unless the file names its task: a model of no task, a file it could not read, a notebook's run,
#: a file it does not grade (a write-up, a screenshot); not "graded", nor a scaling file or a module the graded
#: work used
LOOSE = frozenset({"unmatched", "error", "executed", "ignored"})


def override(name):
    """A TA's override or undo, through ``api.override_score`` with the version the form was drawn from."""
    data = _student_or_404(name)
    form = request.form
    task, reason, by = form.get("task", ""), form.get("reason", ""), form.get("by", "").strip()
    undo = form.get("action") == "undo"
    # back to the page as it was drawn: the task's section, the class table's order (its previous and next)
    back = url_for("student", name=name, **_order_args(_order([data]), _query())) + (
        f"#task-{task}" if task in {t["id"] for t in data["tasks"]} else "")
    try:
        points = None if undo else float(form.get("points", ""))
    except ValueError:
        points = "?"
    # the reason and the name refused as `grader override` refuses them (one check, grader.ci.inputs): a
    # control character (an escape, a bidi control; the reason may keep its line breaks), a reason too long
    from ..ci.inputs import MAX_REASON, id_problem, reason_problem

    problem = reason_problem(reason, allow="\t\n\r") or (id_problem("name given in By", by) if by else None)
    # what the TA typed, bounded, for the form that comes back when refused (shown escaped, as every string)
    typed = {"action": "undo" if undo else "set", "points": form.get("points", "")[:MAX_POINTS_CHARS],
             "reason": reason[:MAX_REASON], "by": by[:MAX_BY_CHARS]}
    if points == "?":
        _say(f"Task {task}: not changed. Give the points as a number.", "refused", task, typed)
    elif problem:
        _say(f"Task {task}: not changed: {problem}.", "refused", task, typed)
    elif not undo and not reason.strip():
        _say(f"Task {task}: not changed. Give a reason: the gradebook keeps it with the score.", "refused", task,
             typed)
    else:
        _decide(data["id"], task, points, reason, by, form.get("version") or None, typed)
    response = redirect(back, code=303)
    # a name the TA typed is remembered (this server, this browser); the server's own (--by) needs no cookie
    by = "" if problem else by
    if by and by[:MAX_BY_CHARS] != _state()["by"]:
        response.set_cookie(_state()["by_cookie"], by[:MAX_BY_CHARS], httponly=True, samesite="Strict")
    elif by and _state()["by_cookie"] in request.cookies:
        response.delete_cookie(_state()["by_cookie"], httponly=True, samesite="Strict")
    return response


def _decide(student_id: str, task: str, points: float | None, reason: str, by: str, version: str | None,
            typed: dict | None = None) -> None:
    """Record the override (or undo, ``points`` None) and say what happened (``typed`` back in a refused form)."""
    from ..api import override_score

    state = _state()
    try:
        with state["lock"]:
            done = override_score(student_id, task, points, reason=reason, by=by or state["by"],
                                  out_dir=state["folder"], db_url=state["db_url"], assignment_id=state["assignment"],
                                  assignment_dir=state["assignment_dir"], wait=OVERRIDE_WAIT_S,
                                  expected_version=version)
    except (GradebookError, FatalError) as e:
        _say(f"Task {task}: not changed. {e.explain()}", "refused", task, typed)
        return
    t = done["task"]
    what = (f"the override was undone; the grader's {t['score']:g} of {t['max_score']:g} stands" if points is None
            else f"set to {t['score']:g} of {t['max_score']:g}")
    redrawn = "" if done["redrawn"] else f" (pages not re-drawn: {done['why_not']})"
    _say(f"Task {task}: {what}; recorded in the gradebook{redrawn}.", "ok", task)


def report(name, work=False):
    """The student's static feedback page (or their work as it ran), framed by the student's page."""
    _student_or_404(name)
    path = _page_file(_state()["pages"], name, "work" if work else None)
    if path is None:
        abort(404)
    try:  # opened without following a link (one made since it was looked at), read within the bound
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        with os.fdopen(fd, "rb") as f:
            regular = stat.S_ISREG(os.fstat(f.fileno()).st_mode)
            body = f.read(MAX_PAGE_BYTES + 1) if regular else b""
    except OSError:
        abort(404)
    if not regular or len(body) > MAX_PAGE_BYTES:
        abort(404)
    response = current_app.response_class(body, mimetype="text/html")
    # the static page: its own inline styles and data: images; sandboxed: no script, no form (its origin kept,
    # which no script can use, so that its link to the work as it ran carries the cookie)
    response.headers["Content-Security-Policy"] = ("sandbox allow-same-origin; default-src 'none'; "
                                                   "style-src 'unsafe-inline'; img-src data:; base-uri 'none'; "
                                                   "form-action 'none'; frame-ancestors 'self'")
    return response


#: a flashed message travels in a cookie (about 4 KB at most): a long reason is cut
MAX_MESSAGE_CHARS = 1200


def _say(text: str, category: str, task: str | None = None, typed: dict | None = None) -> None:
    """Flash ``text`` (at the task's section); ``typed``: the refused form's values, kept in the server for the
    page the redirect draws (``_messages``), the flashed message naming them by a random key."""
    text = text if len(text) <= MAX_MESSAGE_CHARS else text[:MAX_MESSAGE_CHARS - 1] + "…"
    message = {"text": text, "task": task}
    if typed is not None:
        state, key = _state(), secrets.token_urlsafe(16)
        with state["typed_lock"]:
            state["typed"][key] = typed
            while len(state["typed"]) > MAX_KEPT_FORMS:
                state["typed"].popitem(last=False)
        message["form"] = key
    flash(message, category)


def _digest(token: str, purpose: str) -> str:
    return hmac.new(token.encode(), purpose.encode(), hashlib.sha256).hexdigest()


def _os_user() -> str:
    from ..api import os_user

    return os_user()


def _page_file(pages: Path | None, name: str, folder: str | None = None) -> Path | None:
    """The student's static feedback page (or, ``folder="work"``, their work as it ran), when it is a regular
    file (never a link) within the size served."""
    if pages is None or "/" in name or name.startswith("."):
        return None
    path = pages / "students" / (folder or "") / f"{name}.html"
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return path if stat.S_ISREG(st.st_mode) and st.st_size <= MAX_PAGE_BYTES else None


#: the statuses, in the order the distributions show them
STATUSES = ("passed", "partial", "failed", "missing", "error")


def _distributions(tasks: list[dict], rows: list[dict]) -> list[dict]:
    """Each task's distribution over the class: counts by status, scores in five bins, the mean."""
    out = []
    for task in tasks:
        found = [t for r in rows for t in r["tasks"] if t["id"] == task["id"]]
        counts = {s: sum(t["status"] == s for t in found) for s in STATUSES}
        bins = [0] * 5
        for t in found:
            share = t["score"] / t["max_score"] if t["max_score"] else 0.0
            bins[min(4, int(share * 5))] += 1
        mean = sum(t["score"] for t in found) / len(found) if found else 0.0
        out.append({"id": task["id"], "title": task.get("title", ""), "points": task.get("points", 0),
                    "counts": counts, "bins": bins, "most": max(bins) or 1, "n": len(found), "mean": mean})
    return out


def serve(app: Flask, host: str = "127.0.0.1", port: int = 8765, ready=None) -> None:
    """Serve ``app`` on Werkzeug's threaded server until interrupted; ``ready(server)`` once it listens.  An
    address that cannot be listened on raises ``OSError`` (Werkzeug's own bind prints and exits 1)."""
    import socket

    from werkzeug.serving import WSGIRequestHandler, get_sockaddr, make_server, select_address_family

    class Handler(WSGIRequestHandler):
        """Werkzeug's, whose request log shows no query: the first request's holds the access token."""

        def log_request(self, code="-", size="-"):
            if "?" in getattr(self, "path", ""):
                self.path = self.path.split("?", 1)[0] + "?…"
            if "?" in getattr(self, "requestline", ""):
                self.requestline = self.requestline.split("?", 1)[0] + "?…"
            super().log_request(code, size)

    family = select_address_family(host, port)
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as socketserver's own bind
        sock.bind(get_sockaddr(host, port, family))
        sock.listen(128)
        server = make_server(host, port, app, threaded=True, request_handler=Handler, fd=sock.fileno())
    finally:
        sock.close()  # the server listens on its own duplicate
    if ready is not None:
        ready(server)
    try:
        server.serve_forever()
    finally:
        server.server_close()
        app.extensions["grader"]["gradebook"].close()
