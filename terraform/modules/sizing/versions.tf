# Provider-free on purpose: this module is plain arithmetic, so it can be
# initialised and tested offline (`terraform init && terraform test`).
terraform {
  required_version = ">= 1.9.0"
}
