"""A person's browser over real HTTP (requests), for connect flows against the live server."""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser
from urllib.parse import urljoin

import requests


@dataclass
class Form:
    action: str
    method: str
    fields: dict[str, str] = field(default_factory=dict)
    buttons: list[tuple[str, str, str]] = field(default_factory=list)  # name, value, text

    def submit_data(self, button_text: str, **values: str) -> dict[str, str]:
        data = {**self.fields, **values}
        for name, value, text in self.buttons:
            if text.strip() == button_text and name:
                data[name] = value
        return data

    def has_button(self, text: str) -> bool:
        return any(label.strip() == text for _, _, label in self.buttons)


class _FormParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.forms: list[Form] = []
        self._button: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.forms.append(Form(a.get("action", ""), a.get("method", "get").lower()))
        elif not self.forms:
            return
        elif tag == "input" and a.get("name"):
            kind = a.get("type", "text")
            if kind == "submit":
                self.forms[-1].buttons.append((a["name"], a.get("value", ""), a.get("value", "")))
            elif kind not in ("checkbox", "radio") or "checked" in a:
                self.forms[-1].fields[a["name"]] = a.get("value", "")
        elif tag == "button":
            self._button = [a.get("name", ""), a.get("value", ""), ""]

    def handle_data(self, data: str) -> None:
        if self._button is not None:
            self._button[2] += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "button" and self._button is not None and self.forms:
            self.forms[-1].buttons.append(tuple(self._button))  # type: ignore[arg-type]
            self._button = None


def forms_of(html: str) -> list[Form]:
    parser = _FormParser()
    parser.feed(html)
    return parser.forms


class Browser:
    def __init__(self, base_url: str) -> None:
        self.base = base_url
        self.session = requests.Session()

    def get(self, path: str, **kwargs: object) -> requests.Response:
        return self.session.get(urljoin(self.base, path), timeout=30, **kwargs)

    def post(self, path: str, data: dict | None = None, **kwargs: object) -> requests.Response:
        data = {"csrfmiddlewaretoken": self.csrf, **(data or {})}
        return self.session.post(urljoin(self.base, path), data=data, timeout=30, **kwargs)

    def post_json(self, path: str, body: dict) -> requests.Response:
        return self.session.post(
            urljoin(self.base, path), json=body, headers={"X-CSRFToken": self.csrf}, timeout=30
        )

    @property
    def csrf(self) -> str:
        if "csrftoken" not in self.session.cookies:
            self.get("/login/")
        return self.session.cookies["csrftoken"]

    def log_in(self, username: str, password: str) -> None:
        response = self.post("/login/", {"username": username, "password": password})
        assert response.url.endswith("/connections/"), response.url

    def google_connect(
        self, provider_id: str, *, decision: str = "Allow", email: str = ""
    ) -> requests.Response:
        """Connect a Google account through the sandbox's consent page; ends on Connections."""
        start = self.post(f"/connect/login/{provider_id}/", allow_redirects=False)
        assert start.status_code == 302, start.status_code
        consent = self.session.get(start.headers["Location"], timeout=30)
        assert consent.status_code == 200, consent.text[:500]
        form = next(f for f in forms_of(consent.text) if f.has_button(decision))
        values = {}
        if email:
            email_field = next(name for name in form.fields if "email" in name)
            values[email_field] = email
        answer = self.session.request(
            form.method.upper(),
            urljoin(consent.url, form.action),
            data=form.submit_data(decision, **values),
            timeout=30,
        )
        return answer
