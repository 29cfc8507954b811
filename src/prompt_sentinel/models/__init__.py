"""Model artifacts: the descriptor and interface (``base``), one module per family (``sklearn``,
``transformer``, ``ensemble``) and :func:`~prompt_sentinel.models.loading.load_model`, which verifies and loads any
of them. Training and serving both go through here, so they load exactly the same thing."""
