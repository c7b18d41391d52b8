"""Route a request, call a (stand-in) model, report what happened.

    python examples/route_and_report.py [HOST:PORT] [--api-key KEY] [--root-ca ca.pem]

The stand-in model is a local function, so the example needs only a running Switchyard
(`switchyard serve`). Replace `stand_in_model` with your provider's SDK call.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from switchyard import SwitchyardClient  # noqa: E402


def stand_in_model(model: str, prompt: str) -> dict:
    """Pretends to be an LLM: answers with the prompt reversed and token counts."""
    answer = prompt[::-1]
    return {"text": answer, "input_tokens": len(prompt.split()) * 4, "output_tokens": len(answer.split()) * 4}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("addr", nargs="?", default=os.environ.get("SWITCHYARD_ADDR", "127.0.0.1:50051"))
    parser.add_argument("--api-key", default=os.environ.get("SWITCHYARD_API_KEY"))
    parser.add_argument("--root-ca", default=None, help="PEM file of the CA for TLS")
    parser.add_argument("--task-class", default="qa")
    args = parser.parse_args()

    with SwitchyardClient(args.addr, api_key=args.api_key, root_ca=args.root_ca) as client:
        with client.call(args.task_class, max_latency_ms=3000) as call:
            if call.model is None:  # the service answered without needing a model
                print("no model call needed (cache hit)")
                return 0
            print(f"routed to {call.model} ({call.provider}), reason {call.decision.reason}")
            reply = stand_in_model(call.model, "what is the capital of France")
            call.tokens(input_tokens=reply["input_tokens"], output_tokens=reply["output_tokens"])
            call.quality(0.9)
        arm = call.response.arm
        print(
            f"reported SUCCESS for {arm.model}: accepted={call.response.accepted} "
            f"pulls={arm.pulls} successes={arm.successes}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
