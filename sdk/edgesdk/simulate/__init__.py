"""The simulated target: which compute unit runs each kernel (``partition``), what it costs
(``cost_model``, ``efficiency_model``), kernel timings measured here (``measure``) and the cost-model
fit that ``edgesdk calibrate`` stores (``fit``)."""
