"""The last case: stop the main daemon and read every auth-service log of the run."""

import json
import re

from .base import Base
from .lifecycle import StoppedCleanly


def string_values(v):
    if isinstance(v, str):
        yield v
    elif isinstance(v, dict):
        for k, x in v.items():
            yield k
            yield from string_values(x)
    elif isinstance(v, list):
        for x in v:
            yield from string_values(x)


class Hygiene(Base, StoppedCleanly):
    def test_logs_after_sigterm(self):
        s = self.s
        main = s.auth
        code = main.stop()
        self.assertStoppedCleanly(main, code)
        self.assertIn('"event":"stopped"', main.log_text())

        secrets = {x for x in s.secrets if x}
        tokens = set(s.tokens)
        passwords = s.pg.passwords()
        if s.full_run:
            self.assertGreater(len(tokens), 20, "the run should have collected its tokens")
            self.assertIn("secret", secrets)
        self.assertTrue(passwords, "no database password found to look for")

        long_needles = [(f"client secret {x!r}", x) for x in secrets if len(x) >= 10]
        long_needles += [("an access token", t) for t in tokens]
        long_needles += [("an access token's signature", t.rsplit(".", 1)[1]) for t in tokens]
        long_needles += [("the database password", p) for p in passwords]
        short = [x for x in secrets if len(x) < 10]

        for path in s.auth_logs:
            text = path.read_text("utf-8", "replace")
            with self.subTest(log=path.name):
                self.assertTrue(text.strip(), f"{path} is empty")
                for n, line in enumerate(text.splitlines(), 1):
                    try:
                        ev = json.loads(line)
                    except ValueError:
                        self.fail(f"{path.name}:{n} is not JSON: {line[:300]!r}")
                    self.assertIsInstance(ev, dict, f"{path.name}:{n}")
                    for key in ("ts", "level", "service", "event"):
                        self.assertIn(key, ev, f"{path.name}:{n}: {line[:300]}")
                    for value in string_values(ev):
                        for sec in short:
                            # A short secret ("secret") is also an English word: it
                            # must be neither a value nor a quoted or assigned word
                            # inside one ('secret', ="secret", :secret).
                            pattern = r"[=:'\"]\s?" + re.escape(sec) + r"(?![A-Za-z0-9_-])"
                            self.assertFalse(value == sec or re.search(pattern, value),
                                             f"{path.name}:{n} holds the client secret {sec!r}: "
                                             f"{line[:300]}")
                for what, needle in long_needles:
                    self.assertNotIn(needle, text, f"{path.name} contains {what}")
                self.assertNotIn("BEGIN EC PRIVATE KEY", text)
                self.assertNotIn("BEGIN PRIVATE KEY", text)
                for marker in ("AddressSanitizer", "LeakSanitizer", "runtime error:"):
                    self.assertNotIn(marker, text)
