"""CNNs trained from different initialisations: models, data, training, zoo, methods."""
