"""PyTorch test models written the way users write them (not the zoo's classes): the import's test inputs."""
