"""Tests of the wrapper against a running Switchyard (SWITCHYARD_ADDR, default 127.0.0.1:50051),
as tests/suite/python_client.rs runs them, plus a local Python server that records the metadata sent.

The served config must have a task class "qa" whose decisions have at least one fallback (the
built-in default does).
"""

import os
import sys
import unittest
from concurrent import futures

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import grpc  # noqa: E402

from switchyard import SwitchyardClient, SwitchyardError, pb  # noqa: E402
from switchyard.client import Call  # noqa: E402
from switchyard.v1 import switchyard_pb2_grpc as pb_grpc  # noqa: E402

ADDR = os.environ.get("SWITCHYARD_ADDR", "127.0.0.1:50051")


class StepClock:
    """A clock that moves `step_s` each time it is read, so measured latencies are exact."""

    def __init__(self, step_s: float):
        self.now = 1000.0
        self.step_s = step_s

    def __call__(self) -> float:
        self.now += self.step_s
        return self.now


class AgainstServer(unittest.TestCase):
    def setUp(self):
        self.client = SwitchyardClient(ADDR, clock=StepClock(0.25))

    def tearDown(self):
        self.client.close()

    def test_route_then_feedback(self):
        d = self.client.route("qa", request_id="py-route-feedback")
        self.assertTrue(d.decision_id and d.model and d.provider)
        r = self.client.feedback(d.decision_id, outcome=pb.SUCCESS, latency_ms=800.0, quality=0.7)
        self.assertTrue(r.accepted)
        self.assertFalse(r.duplicate)
        self.assertEqual(r.arm.model, d.model)
        again = self.client.feedback(d.decision_id, outcome=pb.SUCCESS, latency_ms=800.0)
        self.assertTrue(again.duplicate)

    def test_call_reports_success_with_the_measured_latency(self):
        with self.client.call("qa") as call:
            before = call.model
            call.tokens(input_tokens=100, output_tokens=50)
            call.quality(0.8)
        self.assertEqual(call.response.arm.model, before)
        self.assertTrue(call.response.accepted)
        stats = self.client.arm_stats("qa", before).arms
        self.assertEqual(len(stats), 1)
        self.assertGreaterEqual(stats[0].successes, 1)

    def test_an_exception_reports_error_and_propagates(self):
        with self.assertRaises(ValueError):
            with self.client.call("qa") as call:
                raise ValueError("provider said no")
        self.assertTrue(call.response.accepted)
        self.assertGreaterEqual(call.response.arm.failures, 1)

    def test_timeout_error_is_reported_as_timeout(self):
        with self.assertRaises(TimeoutError):
            with self.client.call("qa") as call:
                raise TimeoutError()
        self.assertGreaterEqual(call.response.arm.failures, 1)

    def test_fallback_reports_the_first_model_and_moves_on(self):
        with self.client.call("qa") as call:
            first = call.model
            self.assertGreater(len(call.decision.fallbacks), 0)
            second = call.fallback()
            self.assertEqual(second, call.decision.fallbacks[0].model)
            self.assertNotEqual(first, second)
        self.assertEqual([r.arm.model for r in call.responses], [first, second])
        self.assertGreaterEqual(call.responses[0].arm.failures, 1)
        self.assertGreaterEqual(call.responses[1].arm.successes, 1)

    def test_a_decision_without_a_model_reports_nothing(self):
        # What a future cache hit looks like to an older client: no model to call.
        decision = pb.RouteResponse(decision_id="cached-1", model="")
        with Call(self.client, decision, StepClock(0.1)) as call:
            self.assertIsNone(call.model)
            self.assertTrue(call.cache_hit)
        self.assertEqual(call.responses, [])
        self.assertIsNone(call.response)

    def test_a_cache_hit_hands_over_the_stored_answer(self):
        hit = pb.CacheHit(response="Paris", model="m", age_ms=5, similarity=1.0)
        decision = pb.RouteResponse(decision_id="cached-2", reason="cache_hit", cache_hit=hit)
        with Call(self.client, decision, StepClock(0.1)) as call:
            self.assertTrue(call.cache_hit)
            self.assertIsNone(call.model)
            self.assertEqual(call.cached_response, "Paris")
        self.assertEqual(call.responses, [])

    def test_a_prompt_is_routed_and_a_response_offered_to_the_cache(self):
        # The default config caches nothing: the prompt is accepted, the response ignored.
        with self.client.call("qa", prompt="What is 2+2?", messages=[("system", "Be brief")]) as call:
            self.assertFalse(call.cache_hit)
            self.assertIsNone(call.cached_response)
            call.respond("4")
        self.assertTrue(call.response.accepted)
        self.assertIsNone(call.satisfaction(1.0))

    def test_errors_carry_the_status_and_the_services_message(self):
        with self.assertRaises(SwitchyardError) as caught:
            self.client.route("no-such-class")
        self.assertEqual(caught.exception.code, grpc.StatusCode.NOT_FOUND)
        self.assertIn("no-such-class", caught.exception.details)
        with self.assertRaises(SwitchyardError) as caught:
            self.client.feedback("d", quality=1.5)
        self.assertIn(caught.exception.code, (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND))


class RecordingRoute(pb_grpc.RouteServicer):
    """Answers Route with a fixed model and one fallback; records metadata and Feedback requests."""

    def __init__(self):
        self.metadata = []
        self.feedback = []

    def Route(self, request, context):
        self.metadata.append(dict(context.invocation_metadata()))
        return pb.RouteResponse(
            decision_id="d-1",
            model="m",
            provider="p",
            task_class=request.task_class,
            fallbacks=[pb.ModelRef(model="m2", provider="p2")],
        )

    def Feedback(self, request, context):
        self.feedback.append(request)
        return pb.FeedbackResponse(accepted=True, arm=pb.ArmStats(model=request.model))


class AgainstLocalServer(unittest.TestCase):
    def start(self, credentials=None):
        servicer = RecordingRoute()
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        pb_grpc.add_RouteServicer_to_server(servicer, server)
        port = (
            server.add_secure_port("127.0.0.1:0", credentials)
            if credentials
            else server.add_insecure_port("127.0.0.1:0")
        )
        server.start()
        self.addCleanup(server.stop, None)
        return servicer, port

    def test_api_key_is_sent_as_bearer_metadata(self):
        servicer, port = self.start()
        with SwitchyardClient(f"127.0.0.1:{port}", api_key="sk-test-1") as client:
            self.assertEqual(client.route("qa").model, "m")
        with SwitchyardClient(f"127.0.0.1:{port}") as client:
            client.route("qa")
        self.assertEqual(servicer.metadata[0].get("authorization"), "Bearer sk-test-1")
        self.assertNotIn("authorization", servicer.metadata[1])

    def test_call_sends_the_measured_latency_and_what_was_set(self):
        servicer, port = self.start()
        # The step clock moves 250 ms per read: one read entering the block, one leaving it.
        with SwitchyardClient(f"127.0.0.1:{port}", clock=StepClock(0.25)) as client:
            with client.call("qa") as call:
                call.tokens(input_tokens=10, output_tokens=20)
                call.cost(0.001)
                call.quality(0.5)
            with self.assertRaises(KeyError):
                with client.call("qa") as call:
                    call.quality(0.9)
                    raise KeyError("boom")
            with client.call("qa") as call:
                call.fallback(pb.RATE_LIMITED)
        ok, failed, limited, fallback = servicer.feedback
        self.assertEqual((ok.decision_id, ok.model, ok.outcome), ("d-1", "m", pb.SUCCESS))
        self.assertEqual(ok.latency_ms, 250.0)
        self.assertEqual((ok.input_tokens, ok.output_tokens, ok.cost_usd, ok.quality), (10, 20, 0.001, 0.5))
        self.assertEqual(failed.outcome, pb.ERROR)
        self.assertFalse(failed.HasField("quality"), "a failed call carries no quality score")
        self.assertFalse(failed.HasField("cost_usd"), "cost is left to the service's price table")
        self.assertEqual((limited.model, limited.outcome), ("m", pb.RATE_LIMITED))
        self.assertEqual((fallback.model, fallback.outcome), ("m2", pb.SUCCESS))

    def test_tls_with_a_root_ca(self):
        cert_dir = os.environ.get("SWITCHYARD_TEST_CERTS")
        if not cert_dir:
            self.skipTest("SWITCHYARD_TEST_CERTS (ca.pem, other-ca.pem, server.pem, server.key) not set")
        with open(os.path.join(cert_dir, "server.key"), "rb") as f:
            key = f.read()
        with open(os.path.join(cert_dir, "server.pem"), "rb") as f:
            cert = f.read()
        _, port = self.start(grpc.ssl_server_credentials([(key, cert)]))
        ca = os.path.join(cert_dir, "ca.pem")
        with SwitchyardClient(f"localhost:{port}", root_ca=ca, api_key="k") as client:
            self.assertEqual(client.route("qa").model, "m")
        # Trusting another CA, the handshake fails: the server's certificate is not trusted.
        other = os.path.join(cert_dir, "other-ca.pem")
        with SwitchyardClient(f"localhost:{port}", root_ca=other, timeout_s=2) as client:
            with self.assertRaises(SwitchyardError):
                client.route("qa")


if __name__ == "__main__":
    unittest.main()
