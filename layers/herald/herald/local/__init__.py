"""Developer tooling: the local Herald stack (moto-backed AWS, API and delivery worker). Never shipped in the layer."""
