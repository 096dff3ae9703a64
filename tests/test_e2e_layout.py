"""Every console page fits a phone (390 px) and a desktop (1280 px): no cell overflows its table.

Measured in Chromium by element boxes, on pages filled with the long values real
directories hold (long addresses, several groups, a user agent, failed requests).
"""

import urllib.request

import pytest
from playwright.sync_api import expect

from mdm.activity import writer

from .test_e2e_browser import generate
from .test_e2e_browser import live  # noqa: F401 (fixture)
from .test_e2e_browser import page  # noqa: F401 (fixture)
from .test_e2e_browser import scim
from .test_e2e_browser import setup_admin
from .test_e2e_browser import shot

ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
USER_AGENT = (
    "Azure Active Directory SCIM Provisioning/1.0 (compatible; Microsoft Entra ID "
    "provisioning service; tenant 6f0e3b52-9d5b-4c1e-a1f4-0c2d8e7f9a31)"
)

# Everything in a table's cells must lie inside the table's visible box (its
# scrolling wrapper, if any), and nothing may widen the page itself.
MEASURE = """() => {
  const problems = [];
  const width = document.documentElement.clientWidth;
  if (document.documentElement.scrollWidth > width + 1) {
    problems.push(`page is ${document.documentElement.scrollWidth}px wide in ${width}px`);
  }
  const name = (el) => {
    const text = (el.innerText || el.textContent || '').trim().replace(/\\s+/g, ' ');
    return `${el.tagName.toLowerCase()} "${text.slice(0, 40)}"`;
  };
  for (const table of document.querySelectorAll('main table')) {
    if (table.closest('.visually-hidden') || table.classList.contains('visually-hidden')) {
      continue;
    }
    const box = (table.closest('.table-wrap') || table).getBoundingClientRect();
    const right = Math.min(box.right, width);
    for (const cell of table.querySelectorAll('th, td')) {
      // A phone shows each row as a card, its header row only to screen readers.
      const head = cell.closest('thead');
      if (head && getComputedStyle(head).position === 'absolute') continue;
      const cellBox = cell.getBoundingClientRect();
      if (cellBox.width === 0) continue;
      if (cellBox.right > right + 1) {
        problems.push(`${name(cell)} ends at ${Math.round(cellBox.right)} past ${Math.round(right)}`);
        continue;
      }
      if (cell.scrollWidth > cell.clientWidth + 1) {
        problems.push(`${name(cell)} content is ${cell.scrollWidth}px in ${cell.clientWidth}px`);
        continue;
      }
      for (const inner of cell.querySelectorAll('*')) {
        const innerBox = inner.getBoundingClientRect();
        if (innerBox.width && innerBox.right > cellBox.right + 1) {
          problems.push(`${name(inner)} in ${name(cell)} sticks out of its cell`);
          break;
        }
      }
    }
  }
  // A read-only field in a table shows all of its value.
  for (const field of document.querySelectorAll('main table textarea, main table input')) {
    if (field.scrollWidth > field.clientWidth + 1 || field.scrollHeight > field.clientHeight + 1) {
      problems.push(`field "${field.value.slice(0, 40)}" cuts its value`);
    }
  }
  // On a desktop the navigation is one row.
  const links = [...document.querySelectorAll('header nav a')].map((a) => a.getBoundingClientRect().top);
  if (width >= 1280 && links.length && Math.max(...links) - Math.min(...links) > 2) {
    problems.push('the navigation wraps');
  }
  const canvas = document.createElement('canvas').getContext('2d');
  // A form's labels stay on one line and its placeholders show whole.
  for (const label of document.querySelectorAll('main form.filters label')) {
    const line = parseFloat(getComputedStyle(label).lineHeight);
    if (label.getBoundingClientRect().height > line * 1.5) {
      problems.push(`label "${label.textContent.trim()}" wraps`);
    }
  }
  for (const input of document.querySelectorAll('main input[placeholder]')) {
    const style = getComputedStyle(input);
    canvas.font = style.font;
    const room = input.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
    if (canvas.measureText(input.placeholder).width > room + 1) {
      problems.push(`placeholder "${input.placeholder}" is cut`);
    }
  }
  // A menu in a table is as wide as its longest choice, never squeezed.
  for (const select of document.querySelectorAll('main table select')) {
    canvas.font = getComputedStyle(select).font;
    const longest = Math.max(...[...select.options].map((o) => canvas.measureText(o.text).width));
    const box = select.getBoundingClientRect().width;
    if (box < longest + 24) {
      problems.push(`select "${select.options[0].text}" is ${Math.round(box)}px for ${Math.round(longest)}px of text`);
    }
  }
  return problems;
}"""


def call(base, secret, method, path, body=None):
    """A SCIM request with Entra's User-Agent, so tokens show a last client."""
    request = urllib.request.Request(
        f"{base}/scim/v2{path}",
        method=method,
        data=None if body is None else __import__("json").dumps(body).encode(),
        headers={
            "Authorization": f"Bearer {secret}",
            "Content-Type": "application/scim+json",
            "User-Agent": USER_AGENT,
        },
    )
    try:
        with urllib.request.urlopen(request) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


@pytest.fixture
def filled(live, page):  # noqa: F811 (fixtures)
    """A console with long names everywhere; return (base, {page name: path})."""
    app, base = live
    setup_admin(page, app, base)
    secret, _ = generate(page, "Entra ID production tenant (contoso.onmicrosoft.com)")
    page.get_by_role("link", name="I've copied it").click()
    page.get_by_role("link", name="Custom Attributes").click()
    page.get_by_label("Attribute name").fill("costCenterCodeForFinanceReporting")
    page.get_by_role("button", name="Add attribute").click()

    users = []
    for n, (given, family) in enumerate(
        [
            ("Alexandra", "Montgomery-Fitzgerald"),
            ("Bartholomew", "Oyelaran-Castellanos"),
            ("Chandrasekhar", "Vaidyanathan"),
            ("Dorothea", "Wojciechowska"),
        ]
    ):
        address = f"{given.lower()}.{family.lower()}@subsidiary.contoso-international.example.com"
        status, user = scim(
            base,
            secret,
            "POST",
            "/Users",
            {
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", ENTERPRISE],
                "userName": address,
                "externalId": f"00000000-0000-4000-8000-00000000000{n}",
                "displayName": f"{given} {family}",
                "name": {"givenName": given, "familyName": family},
                "title": "Principal Infrastructure Reliability Engineer",
                "emails": [
                    {"value": address, "type": "work", "primary": True},
                    {
                        "value": f"{given.lower()}@personal-mail.example.org",
                        "type": "home",
                    },
                ],
                ENTERPRISE: {
                    "department": "Research and Development (Europe, Middle East, Africa)",
                    "employeeNumber": f"EMP-{n:08d}",
                    **({"manager": {"value": users[0]["id"]}} if users else {}),
                },
            },
        )
        assert status == 201, user
        users.append(user)
    groups = []
    for name in ("Global Infrastructure Engineering", "All Staff (EMEA)", "VPN Users"):
        status, group = scim(
            base,
            secret,
            "POST",
            "/Groups",
            {
                "displayName": name,
                "externalId": f"group-{name}",
                "members": [{"value": u["id"]} for u in users],
            },
        )
        assert status == 201, group
        groups.append(group)
    # A last client on the token, failed requests with long hints, a deprovisioned user.
    assert call(base, secret, "GET", "/Users?filter=userName%20eq%20%22x%22") == 200
    assert call(base, secret, "GET", "/Users?filter=userName%20xx%20%22x%22") == 400
    assert (
        call(base, secret, "POST", "/Users", {"userName": users[1]["userName"]}) == 409
    )
    assert call(base, "mdm_000000000000_wrong", "GET", "/Users") == 401
    assert call(base, secret, "DELETE", f"/Users/{users[3]['id']}") == 204

    writer.flush()
    page.goto(f"{base}/admin/activity")
    entry = page.locator("table.log tbody a").first.get_attribute("href")
    return base, {
        "dashboard": "/admin/",
        "users": "/admin/users",
        "user": f"/admin/users/{users[1]['id']}",
        "groups": "/admin/groups",
        "group": f"/admin/groups/{groups[0]['id']}",
        "provisioning": "/admin/provisioning/entra",
        "attributes": "/admin/attributes",
        "activity": "/admin/activity",
        "activity-entry": entry,
        "audit": "/admin/audit",
        "admins": "/admin/admins",
        "purge": "/admin/users/purge-deprovisioned",
    }


@pytest.mark.parametrize("width", [390, 1280])
def test_no_cell_overflows_its_table(filled, page, width):  # noqa: F811 (fixture)
    base, paths = filled
    page.set_viewport_size({"width": width, "height": 900})
    problems = {}
    for name, path in paths.items():
        page.goto(base + path)
        expect(page.locator("main h1")).to_be_visible()
        shot(page, f"layout-{name}-{width}")
        found = page.evaluate(MEASURE)
        if found:
            problems[name] = found
    assert not problems, "\n".join(
        f"{name}: {problem}" for name, found in problems.items() for problem in found
    )
