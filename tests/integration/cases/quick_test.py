"""scripts/quick-test.sh, the seed's quick test: run against the stack's
nginx (both listeners) it passes every step; pointed at nothing it stops at
the first step with exit status 1. And scripts/demo.sh, whose scenarios
check what they narrate, runs through."""

import os
import subprocess
import unittest

from harness import SCRIPTS, free_port
import harness


class QuickTest(unittest.TestCase):
    def run_script(self, *args):
        return subprocess.run([str(SCRIPTS / "quick-test.sh"), *args], capture_output=True,
                              text=True, timeout=120)

    def test_passes_against_the_stack(self):
        s = harness.STACK
        if s.agent is None:
            self.fail(f"the agent did not start: {s.agent_error}")
        p = self.run_script("--url", f"http://127.0.0.1:{s.nginx.port}",
                            "--agent-url", f"http://127.0.0.1:{s.nginx.agent_port}",
                            "--configure-agent")
        self.assertEqual(p.returncode, 0, f"stdout:\n{p.stdout}\nstderr:\n{p.stderr}")
        last = p.stdout.strip().splitlines()[-1]
        self.assertRegex(last, r"^all \d+ steps passed$")
        steps = int(last.split()[1])
        self.assertGreaterEqual(steps, 24, p.stdout)  # agent steps included
        self.assertNotIn("FAILED", p.stdout + p.stderr)
        # the secret it registered is never printed
        self.assertNotRegex(p.stdout, r"qt-[0-9a-f]{36}")

    def test_fails_on_a_dead_stack(self):
        port = free_port()
        p = self.run_script("--url", f"http://127.0.0.1:{port}", "--no-agent")
        self.assertEqual(p.returncode, 1, p.stdout + p.stderr)
        self.assertIn("FAILED", p.stderr)
        self.assertIn("expected HTTP 200", p.stderr)
        self.assertNotIn("all ", p.stdout)

    def test_usage_errors(self):
        p = self.run_script("--bogus")
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("unknown option", p.stderr)
        p = self.run_script("--help")
        self.assertEqual(p.returncode, 0)
        self.assertIn("--configure-agent", p.stdout + p.stderr)


class Demo(unittest.TestCase):
    def test_demo_runs_through(self):
        s = harness.STACK
        if not os.access(s.agent_binary, os.X_OK):
            self.fail(f"{s.agent_binary} not built")
        env = dict(s.auth.env)  # the CLI of scenario 3 needs the database
        p = subprocess.run([str(SCRIPTS / "demo.sh"), "--fast",
                            "--url", f"http://127.0.0.1:{s.nginx.port}",
                            "--cli", f"{s.binary} client", "--agent-bin", str(s.agent_binary)],
                           capture_output=True, text=True, timeout=180, env=env)
        out = p.stdout + p.stderr
        self.assertEqual(p.returncode, 0, out[-4000:])
        self.assertIn("Demo complete: 5 scenarios passed.", p.stdout)
        for n in range(1, 6):
            self.assertIn(f"=== {n}. ", p.stdout)
        self.assertIn('"error":"invalid_token","error_description":"expired"', p.stdout)
        self.assertNotIn("DEMO FAILED", out)
