"""Runners: how planned jobs are executed. ``local`` runs them in this process; a runner takes a list of
:class:`~vidtriplane.runners.jobs.Job` and a task (``load`` once, ``run`` per job) and returns a
:class:`~vidtriplane.runners.local.RunSummary`."""
