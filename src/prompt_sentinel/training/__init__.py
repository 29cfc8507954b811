"""Training: one trainer per model family (``classical``, ``transformer``, ``ensemble``) behind one contract
(``base``), with class balancing (``balance``) and MLflow tracking (``tracking``) shared by all of them."""
