"""The operations dlaasd offers, one module each, over a Context (context.py).

    submit       check a manifest and model, then queue a run
    halt         stop a run (SIGTERM, then SIGKILL)
    delete       forget a finished run, its files and, with purge, its stored results
    describe     a run's public shape, listings, metric points
    artifacts    a run's files: results, definition, logs
    status       the daemon's health, capacity and GPUs
    data         buckets and objects in the object store
    experiments  sweeps of trials, ranked; ASHA's early stops
    priority     a run's place in the queue: checked at submit, changed by an admin
    usage        what the runs that ended in a period used

The API (api.py) and the drop folder (inbox.py) call these; each raises errors.py's
domain errors, which only the API turns into HTTP statuses."""
