# Offline tests of the root module's input validations. The root needs the
# AWS provider, which `terraform test` cannot fetch offline, so .ci/ops-checks
# runs this file against variables.tf alone (copied into a scratch module
# with this file as tests/variables.tftest.hcl). Not picked up by a
# `terraform test` in terraform/ itself (it reads tests/ only).

variables {
  aws_region             = "eu-west-1"
  vpc_id                 = "vpc-0123456789abcdef0"
  public_subnet_ids      = ["subnet-a", "subnet-b"]
  private_subnet_ids     = ["subnet-c", "subnet-d"]
  certificate_arn        = "arn:aws:acm:eu-west-1:123456789012:certificate/x"
  alb_access_logs_bucket = "logs"
  artifact_bucket        = "artifacts"
  artifact_key           = "releases/bigtap"
  artifact_sha256        = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
  orders_sink_url        = "https://orders.example.internal/v1/winners"
  peak_buyers_per_second = 1000000
  node_capacity_rps      = 50000
  winners_per_second     = 2000
  sale_start             = "2026-11-28T12:00:00Z"
  sale_end               = "2026-11-28T14:00:00Z"
  ami_id                 = "ami-0123456789abcdef0"
}

run "a_complete_launch_file_is_accepted" {
  command = plan

  assert {
    condition     = var.store_user_name == null && var.node_idle_timeout_ms > var.alb_idle_timeout_s * 1000
    error_message = "Defaults: the store user follows the deployment name; bigtap outlives the ALB's idle timeout."
  }
}

run "the_ami_must_be_pinned" {
  command = plan

  variables {
    ami_id = "resolve:ssm:/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"
  }

  expect_failures = [var.ami_id]
}

run "bigtap_must_keep_idle_connections_longer_than_the_alb" {
  command = plan

  variables {
    alb_idle_timeout_s   = 60
    node_idle_timeout_ms = 60000
  }

  expect_failures = [var.node_idle_timeout_ms]
}

run "a_longer_alb_timeout_needs_a_longer_node_timeout" {
  command = plan

  variables {
    alb_idle_timeout_s   = 120
    node_idle_timeout_ms = 121000
  }
}

run "the_reserved_store_user_is_refused" {
  command = plan

  variables {
    store_user_name = "default"
  }

  expect_failures = [var.store_user_name]
}

run "an_explicit_store_user_is_accepted" {
  command = plan

  variables {
    store_user_name = "bigtap-bf26"
  }
}

run "liveness_needs_at_least_three_failures_and_a_boot_grace" {
  command = plan

  variables {
    liveness_failures = 1
    liveness_grace_s  = 10
  }

  expect_failures = [var.liveness_failures, var.liveness_grace_s]
}

run "the_store_memory_alarm_stays_below_a_full_store" {
  command = plan

  variables {
    store_memory_alarm_percent = 95
  }

  expect_failures = [var.store_memory_alarm_percent]
}

run "the_sale_must_end_after_it_starts" {
  command = plan

  variables {
    sale_end = "2026-11-28T11:00:00Z"
  }

  expect_failures = [var.sale_end]
}
