"""The machinery that runs stages: parameters, the registry, the stage wrapper, artifacts, training, several processes, the two runners."""
