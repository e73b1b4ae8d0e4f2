"""How a pretraining run is run: building it (``run``), checks before it starts (``preflight``),
the process and the launcher (``runtime``, ``launch``), the data each process reads (``loader``,
``shard_loader``, ``datasets``), the fit loop and its callbacks (``fit``, ``callbacks``), what
it writes (``monitor``, ``trackers``, ``training_state``, ``knn_eval``) and how it stops
(``interrupt``, ``run_lock``). ``trainer.pretrain`` puts them together. What DINO computes (the
step, the objective, the networks, the multi-crop, the schedules) is one floor up, in ``ssl/``."""
