terraform {
  # plantimestamp(), timecmp() and cross-object validation need >= 1.9.
  required_version = ">= 1.9.0"

  required_providers {
    aws = {
      source = "hashicorp/aws"
      # The 5.x line only: a new major version is adopted deliberately, after
      # a plan against a test deployment, never by an unattended init.
      version = "~> 5.80"
    }
  }
}

provider "aws" {
  region = var.aws_region

  default_tags {
    tags = merge(var.tags, {
      "bigtap:deployment" = var.name
    })
  }
}
