"""The methods: CAM, adversarial erasing, PSL, the dense CRF, AffinityNet's random walk, HFPL, the metrics."""
