# dnscache-agent in an AMI built by Packer. A snippet: add the variable and the two
# provisioners to your own build block (its source is defined elsewhere).
#
# The image gets bind9, the agent and its units, enabled but not started. It is not applied
# on the builder: the plan is tuned to the instance it runs on (CPU, memory, ENIs from IMDS),
# so at first boot the service finds the host differs from the plan, and its repair unit
# runs `dnscache-agent apply` for the real instance type.

variable "dnscache_agent_wheel" {
  type        = string
  description = "Path to the dnscache-agent wheel on the machine running Packer"
}

build {
  sources = ["source.amazon-ebs.base"]

  provisioner "file" {
    source      = var.dnscache_agent_wheel
    destination = "/tmp/${basename(var.dnscache_agent_wheel)}"
  }

  provisioner "shell" {
    script           = "${path.root}/install-dnscache-agent.sh"
    environment_vars = ["WHEEL=/tmp/${basename(var.dnscache_agent_wheel)}"]
    execute_command  = "sudo -E sh '{{ .Path }}'"
  }
}
