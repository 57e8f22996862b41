"""The real services other tests rely on answer as those tests expect (tests/services.py)."""

import json
import os
import secrets
import unittest
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt
import psycopg
import sqlalchemy
from selenium.webdriver.common.by import By
from treq.client import HTTPClient
from twisted.internet import reactor
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent
from twisted.web.resource import Resource
from twisted.web.server import Site
from twisted.web.static import Data

from tests import services

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class MissingServiceTests(SynchronousTestCase):
    def test_skip_for_developers_failure_in_ci(self):
        self.patch(os, "environ", {})
        self.assertRaises(unittest.SkipTest, services.missing, "PostgreSQL")
        self.patch(os, "environ", {"CI": "true"})
        error = self.assertRaises(AssertionError, services.missing, "PostgreSQL")
        self.assertIn("PostgreSQL is not installed", str(error))


class PostgresTests(TestCase):
    def engine(self, url):
        engine = sqlalchemy.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
        self.addCleanup(engine.dispose)
        return engine

    async def test_select_one_through_sqlalchemy(self):
        engine = self.engine(services.fresh_postgres_database(self))

        def select():
            with engine.connect() as connection:
                return connection.execute(sqlalchemy.text("select 1")).scalar_one()

        self.assertEqual(await deferToThread(select), 1)

    def test_databases_are_separate_and_dropped(self):
        holder = unittest.TestCase()
        first, second = (services.fresh_postgres_database(holder) for _ in range(2))
        with psycopg.connect(first, autocommit=True) as connection:
            connection.execute("create table t (x int)")
        with psycopg.connect(second, autocommit=True) as connection:
            self.assertIsNone(connection.execute("select to_regclass('t')").fetchone()[0])
        holder.doCleanups()
        names = {urlsplit(url).path[1:] for url in (first, second)}
        with psycopg.connect(services.postgres_url()) as connection:
            rows = connection.execute("select datname from pg_database").fetchall()
        self.assertEqual(names & {name for (name,) in rows}, set())


class ChromiumTests(TestCase):
    async def test_loads_a_page_and_screenshots_it(self):
        page = b"<!doctype html><title>services</title><h1 id='greeting'>served by twisted</h1>"
        root = Resource()
        root.putChild(b"", Data(page, "text/html"))
        port = reactor.listenTCP(0, Site(root), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        driver = await services.browser(self)
        await deferToThread(driver.get, f"http://127.0.0.1:{port.getHost().port}/")
        heading = await deferToThread(driver.find_element, By.ID, "greeting")
        self.assertEqual(await deferToThread(lambda: heading.text), "served by twisted")
        path = await deferToThread(services.screenshot, driver, "test_services-page")
        with open(path, "rb") as f:
            self.assertEqual(f.read(len(PNG_MAGIC)), PNG_MAGIC)


class OpenIDProviderTests(TestCase):
    async def json(self, client, method, url, **kwargs):
        response = await client.request(method, url, **kwargs)
        return response.code, json.loads(await response.content())

    async def test_authorization_code_flow(self):
        redirect_uri = "http://127.0.0.1:9/api/oidc/callback"
        provider = await services.oidc_provider(self, redirect_uri)
        client = HTTPClient(Agent(reactor))
        code, discovery = await self.json(client, "GET", provider.discovery_url)
        self.assertEqual((code, discovery["issuer"]), (200, provider.issuer))
        state, nonce = secrets.token_urlsafe(), secrets.token_urlsafe()
        authorization = discovery["authorization_endpoint"] + "?" + urlencode({
            "response_type": "code", "client_id": provider.client_id, "scope": "openid email profile",
            "redirect_uri": redirect_uri, "state": state, "nonce": nonce})

        callback = await provider.login(authorization, "alice", email="alice@example.test",
                                        name="Alice Example")

        self.assertTrue(callback.startswith(redirect_uri + "?"), callback)
        answer = parse_qs(urlsplit(callback).query)
        self.assertEqual((answer["state"], answer["iss"]), ([state], [provider.issuer]))
        exchange = {"grant_type": "authorization_code", "code": answer["code"][0],
                    "redirect_uri": redirect_uri}
        code, refused = await self.json(client, "POST", discovery["token_endpoint"],
                                        data=exchange, auth=(provider.client_id, "wrong"))
        self.assertEqual((code, refused["error"]), (401, "invalid_client"))
        code, tokens = await self.json(client, "POST", discovery["token_endpoint"], data=exchange,
                                       auth=(provider.client_id, provider.client_secret))
        self.assertEqual(code, 200, tokens)

        code, keys = await self.json(client, "GET", discovery["jwks_uri"])
        key = jwt.PyJWKSet.from_dict(keys)[jwt.get_unverified_header(tokens["id_token"])["kid"]]
        claims = jwt.decode(tokens["id_token"], key, algorithms=["RS256"],
                            audience=provider.client_id, issuer=provider.issuer)
        self.assertEqual((claims["sub"], claims["nonce"]), ("alice", nonce))
        self.assertRaises(jwt.InvalidAudienceError, jwt.decode, tokens["id_token"], key,
                          algorithms=["RS256"], audience="someone-else", issuer=provider.issuer)
        code, user = await self.json(client, "GET", discovery["userinfo_endpoint"], headers={
            "Authorization": "Bearer " + tokens["access_token"]})
        self.assertEqual(user, {"sub": "alice", "email": "alice@example.test",
                                "email_verified": True, "name": "Alice Example"})
