"""Ticket core in the browser: triage (take, IP field, Cc, close with an outcome),
merge and split, history and previous incidents, rights (the admin grid, an agent
without rights), stale forms, the queue view; and every page route's access rules."""
from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import httpx
from playwright.sync_api import expect

from tests.gateway.browser.conftest import new_page
from tests.gateway.browser.support import deliver, login
from tests.helpers import make_mail

APP = Path(__file__).resolve().parents[3] / "gateway" / "app.py"


def net_of(marker: str) -> str:
    """A /24 of 10/8 that only this test's mail mentions."""
    n = int(marker[1:], 16)
    return f"10.{n % 250 + 1}.{(n >> 8) % 250 + 1}"


def flash_ok(page, text):
    expect(page.locator(".flash-ok")).to_contain_text(text)


def refused(page, text):
    expect(page.locator(".flash-error")).to_contain_text(text)


def panel(page, name):
    """A section of the ticket page's side panel, by its heading."""
    return page.get_by_role("complementary").locator("section").filter(
        has=page.get_by_role("heading", name=name, exact=True))


def new_ticket(page, queue: str, subject: str, text: str = "", requestors: str = "") -> int:
    page.goto(f"/tickets/new?queue={queue}")
    page.get_by_label("Queue", exact=True).select_option(queue)
    page.get_by_label("Subject", exact=True).fill(subject)
    page.get_by_label(re.compile("^Requestors")).fill(requestors)
    page.get_by_label(re.compile("^Text")).fill(text)
    page.get_by_role("button", name="Create ticket").click()
    flash_ok(page, "created")
    return int(re.search(r"/tickets/(\d+)$", page.url).group(1))


def comment(page, text: str, minutes: int = 0):
    page.get_by_label("Comment (internal, not mailed)").fill(text)
    if minutes:
        page.get_by_label("Time worked (minutes)").fill(str(minutes))
    page.get_by_role("button", name="Add comment").click()
    flash_ok(page, "Comment added")


def test_triage_take_ip_field_cc_close_with_outcome_history_and_previous_incidents(page, stack, api, marker):
    net = net_of(marker)
    earlier = deliver(stack, api, make_mail(f"Scan from {net}.23 {marker}", f"seen {net}.23 scanning"))["ticket_id"]
    tid = deliver(stack, api, make_mail(f"Again {marker}", f"{net}.23 again, and {net}.99"))["ticket_id"]
    field = f"IPs {marker}"

    login(page, stack)
    # an administrator makes an IP-range field
    page.goto("/admin/fields")
    page.get_by_label("Name", exact=True).fill(field)
    page.get_by_label("Type", exact=True).select_option("iprange")
    page.get_by_role("button", name="Create field").click()
    flash_ok(page, f"Field {field} (iprange) created")

    page.goto(f"/tickets/{tid}")
    expect(page.get_by_role("heading", name=f"#{tid} Again {marker}")).to_be_visible()
    # previous incidents: the earlier ticket, with the address both mention
    incidents = page.locator("section.incidents")
    expect(incidents.get_by_role("link", name=f"#{earlier} Scan from {net}.23 {marker}")).to_be_visible()
    expect(incidents).to_contain_text(f"same IP: {net}.23")

    # take it
    panel(page, "Owner").get_by_role("button", name="Take").click()
    flash_ok(page, "Taken")
    expect(panel(page, "Owner")).to_contain_text("admin")

    # an IP range field: a wrong value is refused with the reason, a right one saved
    box = page.get_by_label(re.compile(f"^{field}"))
    box.fill("999.1.2.3")
    page.get_by_role("button", name="Save fields").click()
    refused(page, "is not an IP address")
    page.get_by_label(re.compile(f"^{field}")).fill(f"{net}.0/24\n192.0.2.1-192.0.2.20")
    page.get_by_role("button", name="Save fields").click()
    flash_ok(page, f"field {field}")
    expect(page.get_by_label(re.compile(f"^{field}"))).to_have_value(f"{net}.0/24\n192.0.2.1-192.0.2.20")

    # a Cc
    page.get_by_label("Add cc").fill("Watcher <Watcher@Example.net>")
    page.get_by_label("Add cc").press("Enter")
    flash_ok(page, "cc now watcher@example.net")
    expect(panel(page, "People").get_by_role("button", name="Remove cc watcher@example.net")).to_be_visible()

    # closing needs an outcome: refused without one, with the choices named
    state = panel(page, "State")
    state.get_by_label("New state").select_option("resolved")
    expect(state.get_by_label("Outcome (needed to close)")).to_be_visible()
    state.get_by_role("button", name="Save state").click()
    refused(page, "closing a ticket needs an outcome: one of solved")
    state = panel(page, "State")
    state.get_by_label("New state").select_option("resolved")
    state.get_by_label("Outcome (needed to close)").select_option("solved")
    state.get_by_role("button", name="Save state").click()
    flash_ok(page, "state: new → resolved")
    expect(page.locator("dl.summary")).to_contain_text("outcome: solved")
    # the outcome choice hides while no closing state is chosen (script), shows for one
    state = panel(page, "State")
    expect(state.get_by_label("Outcome (needed to close)")).to_be_visible()   # a closed ticket: change the outcome
    state.get_by_label("New state").select_option("open")
    expect(state.get_by_label("Outcome (needed to close)")).to_be_hidden()

    # the history: who, what, old → new
    history = page.locator("section.history")
    for line in ("owner: (none) → admin", f"field {field}: (none) → {net}.0/24, 192.0.2.1-192.0.2.20",
                 "added cc watcher@example.net", "state: new → resolved (outcome solved)"):
        expect(history).to_contain_text(line)
    expect(history.locator("li").filter(has_text="owner: (none) → admin")).to_contain_text("admin:")

    # the field's range finds this ticket from the earlier one too (netblock)
    page.goto(f"/tickets/{earlier}")
    expect(page.locator("section.incidents").get_by_role("link", name=f"#{tid} Again {marker}")).to_be_visible()
    assert page.outside_requests == []


def test_merge_redirects_the_old_number_and_split_moves_an_article_out(page, stack, api, marker):
    source = deliver(stack, api, make_mail(f"Source {marker}", "the first report"))["ticket_id"]
    target = deliver(stack, api, make_mail(f"Target {marker}", "the second report"))["ticket_id"]
    login(page, stack)
    page.goto(f"/tickets/{source}")
    comment(page, f"looked at it {marker}", 10)
    page.goto(f"/tickets/{target}")
    comment(page, "five minutes here", 5)

    page.goto(f"/tickets/{source}")
    page.get_by_label("Merge this ticket into #").fill(str(target))
    page.get_by_role("button", name="Merge", exact=True).click()
    expect(page).to_have_url(f"{stack.url}/tickets/{target}")
    flash_ok(page, f"Merged #{source} into #{target}: 2 articles moved")
    expect(page.locator(".time-worked")).to_have_text("15 min")
    expect(page.locator("pre.body").filter(has_text="the first report")).to_be_visible()
    expect(page.locator("section.history")).to_contain_text(f"#{source} (Source {marker}) merged into this ticket")

    # the old number leads to the survivor
    page.goto(f"/tickets/{source}")
    expect(page).to_have_url(f"{stack.url}/tickets/{target}")
    flash_ok(page, f"Ticket #{source} was merged into #{target}")

    # split the 10-minute comment out into a new ticket
    article = page.locator("article.article").filter(has_text=f"looked at it {marker}")
    article_id = article.get_attribute("id").removeprefix("article-")
    page.get_by_label(f"Split out article {article_id}").check()
    page.get_by_label("Subject of the new ticket").fill(f"Split {marker}")
    page.get_by_role("button", name="Split out").click()
    flash_ok(page, f"Split articles {article_id} out into #")
    expect(page.locator(".time-worked")).to_have_text("5 min")
    expect(page.locator("article.article").filter(has_text=f"looked at it {marker}")).to_have_count(0)
    page.locator(".flash-ok").get_by_role("link", name="Open it").click()
    expect(page.get_by_role("heading", name=re.compile(rf"^#\d+ Split {marker}$"))).to_be_visible()
    new_id = int(re.search(r"/tickets/(\d+)$", page.url).group(1))
    expect(page.locator("pre.body")).to_have_text(f"looked at it {marker}")
    expect(page.locator(".time-worked")).to_have_text("10 min")
    expect(panel(page, "Links").get_by_role("link", name=f"#{target} Target {marker}")).to_be_visible()
    expect(page.locator("section.history")).to_contain_text(f"split from #{target} (articles {article_id})")
    page.goto(f"/tickets/{target}")
    expect(page.locator("section.history")).to_contain_text(f"articles {article_id} split out into #{new_id}")
    expect(panel(page, "Links")).to_contain_text("referred-to-by")


def test_rights_grid_and_an_agent_without_rights(browser, page, stack, marker):
    queue, agent, password = f"secret-{marker}", f"agent-{marker}", "agent-password-1"
    login(page, stack)
    page.goto("/admin/queues")
    page.get_by_label(re.compile("^Name")).fill(queue)
    page.get_by_role("button", name="Create queue").click()
    flash_ok(page, f"Queue {queue} created")
    page.goto("/admin/users")
    page.get_by_label("Username").fill(agent)
    page.get_by_label(re.compile("^Password")).fill(password)
    page.get_by_label("Role", exact=True).select_option("agent")
    page.get_by_role("button", name="Create user").click()
    flash_ok(page, f"User {agent} created (agent)")
    tid = new_ticket(page, queue, f"Hidden {marker}", "only for some eyes")

    # the grid: revoke the agents' "see" on the queue, grant and revoke the customers' "see"
    page.goto(f"/admin/rights?queue={queue}")
    expect(page.get_by_role("heading", name=f"Rights on queue {queue}")).to_be_visible()
    agent_see = page.get_by_label("role:agent see", exact=True)
    expect(agent_see).to_be_checked()
    agent_see.uncheck()
    page.get_by_label("role:customer see", exact=True).check()
    page.get_by_role("button", name="Save rights").click()
    flash_ok(page, "role:customer +see")
    flash_ok(page, "role:agent −see")
    expect(page.get_by_label("role:agent see", exact=True)).not_to_be_checked()
    expect(page.get_by_label("role:customer see", exact=True)).to_be_checked()
    expect(page.get_by_label("role:agent take", exact=True)).to_be_checked()   # the others stay
    page.get_by_label("role:customer see", exact=True).uncheck()
    page.get_by_role("button", name="Save rights").click()
    flash_ok(page, "role:customer −see")
    expect(page.get_by_label("role:customer see", exact=True)).not_to_be_checked()

    other = new_page(browser, stack)
    try:
        login(other, stack, agent, password)
        aside = other.get_by_role("complementary")
        expect(aside.get_by_role("link", name="general", exact=True)).to_be_visible()
        expect(aside.get_by_role("link", name=queue)).to_have_count(0)
        response = other.goto(f"/tickets/{tid}")
        assert response.status == 403
        expect(other.get_by_role("heading", name="Not allowed")).to_be_visible()
        expect(other.get_by_role("alert")).to_contain_text(f"lacks the right 'see' in queue '{queue}'")
        assert other.goto(f"/queues/{queue}").status == 404
        assert other.goto("/admin/rights").status == 403
        expect(other.get_by_role("link", name="Admin")).to_have_count(0)

        # granted again, the agent sees queue and ticket
        page.goto(f"/admin/rights?queue={queue}")
        page.get_by_label("role:agent see", exact=True).check()
        page.get_by_role("button", name="Save rights").click()
        flash_ok(page, "role:agent +see")
        other.goto("/")
        expect(other.get_by_role("complementary").get_by_role("link", name=queue)).to_be_visible()
        assert other.goto(f"/tickets/{tid}").status == 200
    finally:
        other.context.close()


def test_a_stale_form_gets_the_conflict_message(browser, page, stack, marker):
    login(page, stack)
    tid = new_ticket(page, "general", f"Stale {marker}", "text")
    elsewhere = page.context.new_page()
    elsewhere.goto(f"/tickets/{tid}")
    elsewhere.get_by_label("Priority (0–100)").fill("77")
    elsewhere.get_by_role("button", name="Save details").click()
    expect(elsewhere.locator(".flash-ok")).to_contain_text("priority: 50 → 77")
    elsewhere.close()

    # the first page still shows the old version: its change is refused, not applied
    page.get_by_label("New state").select_option("open")
    page.get_by_role("button", name="Save state").click()
    refused(page, f"ticket #{tid} was changed since you loaded it")
    expect(page.locator("dl.summary")).to_contain_text("new")
    expect(page.locator("dl.summary")).to_contain_text("77")
    # reloaded, the same change goes through
    page.get_by_label("New state").select_option("open")
    page.get_by_role("button", name="Save state").click()
    flash_ok(page, "state: new → open")


def test_queue_view_keyboard_and_bulk_actions(page, stack, marker):
    queue = f"bulk-{marker}"
    login(page, stack)
    page.goto("/admin/queues")
    page.get_by_label(re.compile("^Name")).fill(queue)
    page.get_by_role("button", name="Create queue").click()
    ids = [new_ticket(page, queue, f"Bulk {n} {marker}", f"report {n}") for n in range(3)]

    page.goto(f"/queues/{queue}?order=oldest")
    expect(page.get_by_role("heading", name=f"Queue {queue}")).to_be_visible()
    rows = page.locator("table.tickets tbody tr")
    expect(rows).to_have_count(3)
    # j/k move, x selects, ? explains
    page.keyboard.press("j")
    expect(rows.nth(0)).to_have_class(re.compile("current"))
    page.keyboard.press("x")
    page.keyboard.press("j")
    page.keyboard.press("j")
    page.keyboard.press("k")
    expect(rows.nth(1)).to_have_class(re.compile("current"))
    page.keyboard.press("x")
    expect(page.get_by_label(f"Select #{ids[0]}")).to_be_checked()
    expect(page.get_by_label(f"Select #{ids[1]}")).to_be_checked()
    expect(page.get_by_label(f"Select #{ids[2]}")).not_to_be_checked()
    page.keyboard.press("?")
    expect(page.get_by_role("dialog", name="Keyboard shortcuts")).to_be_visible()
    page.keyboard.press("Escape")
    expect(page.get_by_role("dialog", name="Keyboard shortcuts")).to_be_hidden()

    page.get_by_role("button", name="Take", exact=True).click()
    flash_ok(page, f"2 tickets taken: #{ids[0]}, #{ids[1]}")
    page.goto(f"/queues/{queue}?owner=me")
    expect(rows).to_have_count(2)

    # set a closing state without an outcome: refused per ticket; with one, done
    page.goto(f"/queues/{queue}")
    page.get_by_label(f"Select #{ids[2]}").check()
    page.locator("#b-state").select_option("rejected")
    page.get_by_role("button", name="Set state").click()
    refused(page, f"#{ids[2]}: closing a ticket needs an outcome")
    page.get_by_label(f"Select #{ids[2]}").check()
    page.locator("#b-state").select_option("rejected")
    page.get_by_label("Outcome (when closing)").select_option("no-solution-needed")
    page.get_by_role("button", name="Set state").click()
    flash_ok(page, f"1 ticket set to rejected: #{ids[2]}")
    expect(rows).to_have_count(2)          # active only, by default

    # merge the two left into the oldest; o opens the ticket under the cursor
    page.get_by_label(f"Select #{ids[0]}").check()
    page.get_by_label(f"Select #{ids[1]}").check()
    page.get_by_role("button", name="Merge selected").click()
    flash_ok(page, f"1 ticket merged into #{ids[0]}: #{ids[1]}")
    expect(rows).to_have_count(1)
    page.keyboard.press("j")
    page.keyboard.press("o")
    expect(page).to_have_url(f"{stack.url}/tickets/{ids[0]}")
    expect(page.locator("article.article")).to_have_count(2)


def test_admin_configures_sla_lifecycle_outcome_group_and_home_shows_reminders(page, stack, marker):
    queue, group, sla, lifecycle = f"sla-{marker}", f"tier2-{marker}", f"gold-{marker}", f"short-{marker}"
    login(page, stack)
    # an SLA with business hours
    page.goto("/admin/slas")
    new = page.locator("section").filter(has=page.get_by_role("heading", name="New SLA"))
    new.get_by_label("Name").fill(sla)
    new.get_by_label("First response (business minutes)").fill("60")
    new.get_by_label("Resolution (business minutes)").fill("2400")
    new.get_by_label(re.compile("^Count only business hours")).check()
    new.get_by_label("Time zone").fill("Nowhere/Atlantis")
    new.get_by_role("button", name="Create SLA").click()
    refused(page, "unknown time zone 'Nowhere/Atlantis'")
    new = page.locator("section").filter(has=page.get_by_role("heading", name="New SLA"))
    new.get_by_label("Name").fill(sla)
    new.get_by_label("First response (business minutes)").fill("60")
    new.get_by_label("Resolution (business minutes)").fill("2400")
    new.get_by_label(re.compile("^Count only business hours")).check()
    new.get_by_label("Time zone").fill("Europe/Prague")
    new.get_by_label("Sat").check()
    new.get_by_label("Holidays (YYYY-MM-DD, one per line)").fill("2026-12-24\n2026-12-25")
    new.get_by_role("button", name="Create SLA").click()
    flash_ok(page, f"SLA {sla} saved")
    saved = page.locator("section").filter(has=page.get_by_role("heading", name=sla, exact=True))
    expect(saved.get_by_label("Time zone")).to_have_value("Europe/Prague")
    expect(saved.get_by_label("Sat")).to_be_checked()
    expect(saved.get_by_label("Sun")).not_to_be_checked()

    # a lifecycle from JSON: not JSON, then not valid, then saved
    page.goto("/admin/lifecycles")
    page.get_by_label("Name", exact=True).fill(lifecycle)
    page.get_by_label("Definition (JSON)", exact=True).fill('{"states": [')
    page.get_by_role("button", name="Save lifecycle").click()
    expect(page.get_by_role("alert")).to_contain_text("not JSON")
    expect(page.get_by_label("Definition (JSON)", exact=True)).to_have_value('{"states": [')
    page.get_by_label("Definition (JSON)", exact=True).fill('{"states": [{"name": "new", "category": "initial"}]}')
    page.get_by_role("button", name="Save lifecycle").click()
    expect(page.get_by_role("alert")).to_contain_text("exactly one initial state and at least one closed state")
    page.get_by_label("Definition (JSON)", exact=True).fill(
        '{"states": [{"name": "new", "category": "initial"}, {"name": "done", "category": "closed"}],'
        ' "transitions": {"new": ["done"], "done": ["new"]}}')
    page.get_by_role("button", name="Save lifecycle").click()
    flash_ok(page, f"Lifecycle {lifecycle} saved")
    expect(page.get_by_role("heading", name=lifecycle)).to_be_visible()

    # an outcome, a group with a member
    page.goto("/admin/outcomes")
    page.get_by_label(re.compile("^Name")).fill(f"handed-over-{marker}")
    page.get_by_label("Description", exact=True).fill("given to another team")
    page.get_by_role("button", name="Add outcome").click()
    flash_ok(page, f"Outcome handed-over-{marker} saved (active)")
    page.goto("/admin/groups")
    page.get_by_label("Name", exact=True).fill(group)
    page.get_by_role("button", name="Create group").click()
    flash_ok(page, f"Group {group} created")
    page.get_by_label(f"Add member to {group}").select_option("admin")
    page.locator("section").filter(has=page.get_by_role("heading", name=group)).get_by_role("button", name="Add").click()
    flash_ok(page, f"admin added to {group}")
    expect(page.get_by_role("button", name=f"Remove admin from {group}")).to_be_visible()
    page.goto("/admin/rights")
    expect(page.get_by_label(f"group:{group} see", exact=True)).to_be_visible()

    # a queue with that SLA and lifecycle; a ticket there has the clocks and the states
    page.goto("/admin/queues")
    page.get_by_label(re.compile("^Name")).fill(queue)
    page.get_by_role("button", name="Create queue").click()
    conf = page.locator("section").filter(has=page.get_by_role("heading", name=queue, exact=True))
    conf.get_by_label("Lifecycle", exact=True).select_option(lifecycle)
    conf.get_by_label("SLA", exact=True).select_option(sla)
    conf.get_by_role("button", name=f"Save queue {queue}").click()
    flash_ok(page, f"Queue {queue} saved")
    tid = new_ticket(page, queue, f"Clocked {marker}", "tick tock")
    clocks = panel(page, "SLA")
    expect(clocks).to_contain_text("First response due")
    expect(clocks).to_contain_text("Resolution due")
    options = panel(page, "State").get_by_label("New state").locator("option")
    expect(options).to_have_text(["(keep new)", "done (closes)"])
    expect(panel(page, "State").get_by_label("Outcome (needed to close)").locator("option")).to_contain_text(
        [f"handed-over-{marker}"])

    # a reminder shows on the home page
    panel(page, "Reminders").get_by_label("Remind me at (UTC)").fill("2030-01-02T09:30")
    panel(page, "Reminders").get_by_label("About").fill(f"chase the ISP {marker}")
    panel(page, "Reminders").get_by_label(re.compile("^Awaiting")).fill("noc@isp.example")
    panel(page, "Reminders").get_by_role("button", name="Set reminder").click()
    flash_ok(page, "Reminder set for 2030-01-02 09:30 UTC")
    page.goto("/")
    reminders = page.locator("section").filter(has=page.get_by_role("heading", name=re.compile("^My reminders")))
    expect(reminders).to_contain_text(f"chase the ISP {marker}")
    expect(reminders.get_by_role("link", name=f"#{tid}")).to_be_visible()
    expect(reminders).to_contain_text("awaiting noc@isp.example")


UNLABELLED = """() => Array.from(document.querySelectorAll('input:not([type=hidden]), select, textarea'))
  .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')
                && !el.getAttribute('aria-labelledby'))
  .map(el => el.outerHTML)"""


def test_every_control_has_a_label_and_every_page_a_heading(page, stack, marker):
    login(page, stack)
    tid = new_ticket(page, "general", f"Labels {marker}", "first")
    comment(page, "second")
    for path in ("/", "/tickets", "/queues/general", "/tickets/new", f"/tickets/{tid}", "/search?q=x", "/admin",
                 "/admin/users", "/admin/groups", "/admin/rights", "/admin/queues", "/admin/lifecycles",
                 "/admin/outcomes", "/admin/fields", "/admin/slas"):
        assert page.goto(path).status == 200, path
        assert page.evaluate(UNLABELLED) == [], path
        expect(page.locator("h1")).to_have_count(1)
    assert page.outside_requests == []


# --- every page route: anonymous → login; no CSRF token → refused; admin pages → admins ------
def page_routes() -> list[tuple[str, str]]:
    """(method, path) of every page route in gateway/app.py's ``routes`` list."""
    tree = ast.parse(APP.read_text())
    found = []
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "routes" for t in node.targets):
            for call in node.value.elts:
                if not (isinstance(call, ast.Call) and getattr(call.func, "id", None) == "Route"):
                    continue
                path = call.args[0].value
                methods = ["GET"]
                for kw in call.keywords:
                    if kw.arg == "methods":
                        methods = [m.value for m in kw.value.elts]
                found += [(m, path) for m in methods]
    return found


PUBLIC = {("GET", "/login"), ("POST", "/login"), ("GET", "/healthz"), ("GET", "/readyz")}


def concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", lambda m: "1" if ":int" in m.group(0) else "general", path)


def test_every_page_route_needs_a_login_and_every_post_a_csrf_token(stack, marker):
    routes = [r for r in page_routes() if r not in PUBLIC]
    assert len(routes) >= 45, routes
    for method, path in routes:
        r = httpx.request(method, f"{stack.url}{concrete(path)}", data={"x": "1"} if method == "POST" else None)
        if method == "GET":
            assert r.status_code == 303 and r.headers["location"].startswith("/login?next="), (method, path)
        else:
            assert r.status_code == 401, (method, path, r.status_code)

    with httpx.Client(base_url=stack.url, timeout=30) as c:
        token = re.search(r'name="csrf_token" value="([^"]+)"', c.get("/login").text).group(1)
        assert c.post("/login", data={"username": "admin", "password": stack.admin_password,
                                      "csrf_token": token}).status_code == 303
        for method, path in routes:
            if method != "POST":
                continue
            r = c.post(concrete(path), data={"x": "1"})
            assert r.status_code == 403 and "CSRF" in r.text, (path, r.status_code)
            r = c.post(concrete(path), data={"x": "1", "csrf_token": "forged"})
            assert r.status_code == 403 and "CSRF" in r.text, (path, r.status_code)


def test_admin_pages_refuse_agents(stack, marker):
    agent, password = f"plain-{marker}", "plain-password-1"
    assert stack.cli("user", "add", agent, "--password-stdin", input=f"{password}\n".encode()).returncode == 0
    admin_routes = [(m, p) for m, p in page_routes() if p.startswith("/admin")]
    assert len(admin_routes) >= 15
    with httpx.Client(base_url=stack.url, timeout=30) as c:
        token = re.search(r'name="csrf_token" value="([^"]+)"', c.get("/login").text).group(1)
        assert c.post("/login", data={"username": agent, "password": password,
                                      "csrf_token": token}).status_code == 303
        token = re.search(r'name="csrf_token" value="([^"]+)"', c.get("/").text).group(1)
        for method, path in admin_routes:
            r = c.request(method, path, data={"csrf_token": token, "username": agent, "role": "admin",
                                              "name": f"x{marker}"} if method == "POST" else None)
            assert r.status_code == 403, (method, path, r.status_code)
        assert 'href="/admin"' not in c.get("/").text
    # nothing happened: still an agent, no group or queue made
    users = json.loads(stack.cli("user", "list", "--json").stdout)
    assert next(u for u in users if u["username"] == agent)["role"] == "agent"
