"""A job kind for the app's tests, loaded by real workers through BITSMITH_EXTRA_JOB_MODULES."""

import time

from bitsmith.engine.jobs import job


@job("app-test-sleep")
def sleep_job(ctx, params):  # noqa: ANN001, ANN201
    """Report progress every 50 ms for `seconds`, stopping cleanly on cancel."""
    steps = int(float(params.get("seconds", 30)) / 0.05)
    ctx.stage("sleep", total=steps)
    ctx.log("sleeping", ready=True)
    for i in range(steps):
        ctx.check_cancel()
        time.sleep(0.05)
        ctx.progress(i + 1)
